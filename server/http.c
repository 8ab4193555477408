/* http: routing, auth, CORS and body handling on top of libmicrohttpd.
 *
 * A request's life: MHD parses the request line and calls uri_logger(),
 * which allocates our per-request state (so the absolute deadline starts
 * there, and the raw, still percent-encoded URI is kept); then access()
 * runs once with the headers, once per upload chunk and once at the end;
 * request_completed() frees the state. Every response goes through
 * send_response(), which adds the headers every answer carries. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "assets.h"
#include "body_budget.h"
#include "cf_event.h"
#include "cf_version.h"
#include "cf_winop.h"
#include "compat_http.h"
#include "cf_time.h"
#include "history.h"
#include "annotate.h"
#include "ingest.h"
#include "stream_ingest.h"
#include "log.h"

/* A watermark request body is tiny; a larger one is refused early. */
#define WATERMARK_MAX_BODY 4096
#define SQL_MAX_BODY ((size_t)1 << 20)   /* POST /api/v1/sql: a script, not data */
/* Listing queries: SPEC 8. */
#define QUERY_LIMIT_DEFAULT 100
#define QUERY_LIMIT_MAX 100000
#define ROLLUP_STEPS_MAX 100000
#define TRENDING_N_DEFAULT 10
#define TRENDING_N_MAX 1000
/* CORS preflight answers may be cached this long by the browser. */
#define CORS_MAX_AGE "600"
/* After an over-limit body (no Content-Length, e.g. chunked) we keep
 * discarding so that the 413 can be sent, but only this many more bytes;
 * past that the connection is just closed. */
#define DISCARD_MAX ((size_t)16 << 20)

/* The reaper enforces our deadlines even while MHD is still collecting
 * headers (when our handler is not called at all): every connection is
 * registered with a deadline, and a thread shuts down the socket of any
 * connection past it; MHD then sees the hang-up and closes the connection
 * itself. Entries leave the list in MHD's CLOSED notification, which comes
 * before MHD closes the fd, so neither the reaper nor the shedding below
 * ever touches a reused descriptor (both hold reaper_mu).
 *
 * A connection's deadline moves with its phase:
 *   opened, or idle after a request   -> headers within --header-timeout
 *                                        (after --connection-timeout idle)
 *   request line in                   -> the same, at most --request-deadline
 *   body                              -> --body-stall-timeout after the last
 *                                        body byte, at most --request-deadline
 *   answering                         -> none */
#define REAPER_PERIOD_MS 200

typedef enum conn_phase {
    PHASE_WAITING = 0,  /* no request line yet, or idle between requests */
    PHASE_HEADERS,      /* request line in, headers not yet */
    PHASE_BODY,         /* reading an accepted POST body */
    PHASE_BUSY,         /* the request is complete and being answered */
} conn_phase;

typedef struct conn_entry {
    struct conn_entry *prev, *next;
    int fd;
    unsigned stripe;                /* the client address's body budget slot */
    _Atomic int64_t deadline_ms;    /* monotonic; 0 = none (a request is being answered) */
    _Atomic int phase;              /* conn_phase */
    _Atomic unsigned served;        /* requests completed on this connection */
    _Atomic int64_t since_ms;       /* monotonic: opened, or last request completed */
    _Atomic size_t body_bytes;      /* body bytes of the current request so far */
    bool cut;                       /* (reaper_mu) shut down, CLOSED not seen yet */
} conn_entry;

/* The fields above are written only by the thread serving the connection
 * and read by the reaper and the shedding, which can act on a value a
 * moment old either way: relaxed stores keep the request path free of
 * fences. */
#define conn_set(field, v) atomic_store_explicit((field), (v), memory_order_relaxed)

struct cf_http {
    cf_config cfg;
    cf_engine *engine;
    struct MHD_Daemon *daemon;
    /* Request bodies held in memory by all connections together and per
     * client address; bounded so that many slow uploads cannot exhaust
     * memory, nor one address take all of it (503 beyond). Taken as body
     * bytes arrive, never from a declared Content-Length. */
    cf_body_budget *budget;
    _Atomic uint64_t over_budget;   /* requests refused for the body budget */
    pthread_mutex_t reaper_mu;
    pthread_cond_t reaper_cv;
    conn_entry *conns;              /* (reaper_mu) */
    unsigned n_conns;               /* (reaper_mu) entries in conns */
    unsigned n_cut;                 /* (reaper_mu) entries cut, CLOSED not seen yet */
    unsigned shed_at;               /* live connections at which a new one sheds an old one */
    uint64_t fd_ceiling;            /* cf_config_fd_ceiling(CF_FD_KEEP_HTTP): higher sockets are cut at once */
    _Atomic unsigned live_conns;    /* n_conns - n_cut, for /metrics */
    _Atomic uint64_t shed;          /* connections shed to make room */
    _Atomic uint64_t timed_out;     /* connections cut by a deadline */
    bool reaper_stop;
    bool reaper_started;
    pthread_t reaper;
    /* The Segment, Plausible and Umami endpoints and the site keys. */
    cf_compat_http *compat;
    cf_annotate *annotate;          /* SPEC 15 enrichment of ingested events */
    /* Responses by status code, for /metrics. */
    _Atomic uint64_t responses[14];   /* N_COUNTED + 1 */
};

/* The status codes counted one by one; anything else is "other". */
static const unsigned counted_status[] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 413, 415, 429, 503};
#define N_COUNTED (sizeof counted_status / sizeof counted_status[0])
_Static_assert(sizeof ((cf_http *)0)->responses / sizeof ((cf_http *)0)->responses[0] == N_COUNTED + 1,
               "one counter per counted status plus other");

typedef enum route {
    R_NONE = 0,     /* not an API path: dashboard asset or 404 */
    R_EVENTS,
    R_WATERMARK,
    R_TRENDING,
    R_WINDOWS,
    R_LATE,
    R_SESSIONS,
    R_USER_SESSIONS,
    R_VIEW_ROLLUP,  /* /api/v1/views/{name}/rollup */
    R_STATS,
    R_INFO,
    R_METRICS,
    R_HEALTHZ,
    R_READYZ,
    R_SQL,          /* POST: statements (SPEC 13) */
    R_VIEWS,
    R_STREAMS,
    R_QUERY,        /* pull queries: POST (body) or GET (?sql=) */
    R_STREAM_EVENTS,/* POST /api/v1/streams/{name}/events (SPEC 12) */
    R_COMPAT,       /* a compatible ingest path (lib/cf_compat.h): compat_http.c */
    R_CLICK_EVENTS, /* GET: the newest events of the clicks stream */
    R_SITES,        /* GET /api/v1/sites: compat_http.c */
    R_TABLES,       /* GET /api/v1/tables (SPEC 12) */
    R_TABLE_ROWS,   /* POST /api/v1/tables/{name}/rows */
    R_TABLE_ROW,    /* GET, DELETE /api/v1/tables/{name}/rows/{key} */
} route;

typedef struct request {
    cf_http *h;
    int64_t start_ms;       /* monotonic; the absolute deadline counts from here */
    char *raw_uri;          /* as sent, percent-encoding intact */
    bool headers_done;      /* access() saw the headers */
    bool query_json;        /* POST /api/v1/query: the body is {"sql": ...} */
    char stream[128];       /* R_STREAM_EVENTS: the stream's name; R_TABLE_*: the table's */
    char key[256];          /* R_TABLE_ROW: the key, percent-decoded */
    route rt;
    cf_compat_endpoint compat_ep;   /* for R_COMPAT */
    cf_body_format fmt;
    size_t body_limit;
    cf_buf body;
    bool reading_body;      /* an accepted POST: upload chunks are ours */
    bool bearer;            /* carried the ingest token (a token is set) */
    bool site_only;         /* no Authorization: only site keys may let its events in */
    bool too_big;
    size_t discarded;
    size_t reserved;        /* body budget bytes held by this request (for its stripe) */
    bool over_budget;       /* the body did not fit in the body budget: 503 */
    unsigned stripe;        /* the client address's budget stripe */
    conn_entry *conn;       /* the connection's reaper entry, or NULL */
} request;

/* Takes n more bytes of the body budget for this request. */
static bool budget_take(cf_http *h, request *rq, size_t n)
{
    if (!cf_body_budget_take(h->budget, rq->stripe, n))
        return false;
    rq->reserved += n;
    return true;
}

static void budget_release(cf_http *h, request *rq)
{
    if (!rq->reserved)
        return;
    cf_body_budget_give(h->budget, rq->stripe, rq->reserved);
    rq->reserved = 0;
}

static unsigned connection_stripe(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return cf_body_budget_slot(ci ? ci->client_addr : NULL);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- responses ---------------------------------------------------------- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The Access-Control-Allow-Origin value for this request's Origin, or NULL
 * when the origin is not allowed (or there is none). */
static const char *cors_allow(const cf_http *h, struct MHD_Connection *c)
{
    const char *origin = header(c, "Origin");
    if (!origin)
        return NULL;
    for (size_t i = 0; i < h->cfg.n_cors_origins; i++) {
        if (strcmp(h->cfg.cors_origins[i], "*") == 0)
            return "*";
        if (strcasecmp(h->cfg.cors_origins[i], origin) == 0)
            return origin;
    }
    return NULL;
}

typedef struct extra_header {
    const char *name, *value;
} extra_header;

/* Queues resp with the headers every answer carries, then drops our
 * reference. Takes ownership of resp (may be NULL after an allocation
 * failure: the connection is then closed). */
static enum MHD_Result send_response(request *rq, struct MHD_Connection *c, unsigned status,
                                     struct MHD_Response *resp, const char *ctype,
                                     const extra_header *extra, size_t n_extra)
{
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (rq && rq->h->cfg.n_cors_origins > 0) {
        const char *allow = cors_allow(rq->h, c);
        if (allow) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
            MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
        }
        /* The answer depends on Origin: caches must keep them apart. */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
    for (size_t i = 0; i < n_extra; i++)
        MHD_add_response_header(resp, extra[i].name, extra[i].value);
    if (rq) {
        size_t k = 0;
        while (k < N_COUNTED && counted_status[k] != status)
            k++;
        atomic_fetch_add_explicit(&rq->h->responses[k], 1, memory_order_relaxed);
    }
    enum MHD_Result r = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void free_cb(void *p) { free(p); }

/* Sends a cJSON document (consumed) as application/json. NULL json means
 * the engine could not answer (stopping or out of memory): 503. */
static enum MHD_Result send_json(request *rq, struct MHD_Connection *c, unsigned status, cJSON *json,
                                 const extra_header *extra, size_t n_extra);

static enum MHD_Result send_error_h(request *rq, struct MHD_Connection *c, unsigned status, const char *msg,
                                    const extra_header *extra, size_t n_extra)
{
    cJSON *o = cJSON_CreateObject();
    if (o && !cJSON_AddStringToObject(o, "error", msg)) {
        cJSON_Delete(o);
        o = NULL;
    }
    if (!o)
        return MHD_NO;
    return send_json(rq, c, status, o, extra, n_extra);
}

static enum MHD_Result send_error(request *rq, struct MHD_Connection *c, unsigned status, const char *msg)
{
    return send_error_h(rq, c, status, msg, NULL, 0);
}

static enum MHD_Result send_unavailable(request *rq, struct MHD_Connection *c, const char *msg)
{
    static const extra_header retry[] = {{MHD_HTTP_HEADER_RETRY_AFTER, "1"}};
    return send_error_h(rq, c, MHD_HTTP_SERVICE_UNAVAILABLE, msg, retry, 1);
}

static enum MHD_Result send_json(request *rq, struct MHD_Connection *c, unsigned status, cJSON *json,
                                 const extra_header *extra, size_t n_extra)
{
    if (!json)
        return send_unavailable(rq, c, "the engine cannot answer now (shutting down or out of memory)");
    char *text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (!text)
        return MHD_NO;
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(strlen(text), text, free_cb);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    return send_response(rq, c, status, resp, "application/json", extra, n_extra);
}

static enum MHD_Result send_static(request *rq, struct MHD_Connection *c, unsigned status, const char *ctype,
                                   const void *data, size_t len, const extra_header *extra, size_t n_extra)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    return send_response(rq, c, status, resp, ctype, extra, n_extra);
}

/* ---- routing ------------------------------------------------------------ */

#define SESSIONS_PREFIX "/api/v1/sessions/"
#define STREAMS_PREFIX "/api/v1/streams/"

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

#define VIEWS_PREFIX "/api/v1/views/"
#define ROLLUP_SUFFIX "/rollup"

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

static bool authorized(struct MHD_Connection *c, const char *token)
{
    if (!token[0])
        return true;
    const char *auth = header(c, MHD_HTTP_HEADER_AUTHORIZATION);
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

static enum MHD_Result send_unauthorized(request *rq, struct MHD_Connection *c, bool had_header)
{
    const extra_header h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                               had_header ? "Bearer realm=\"clickflow\", error=\"invalid_token\""
                                          : "Bearer realm=\"clickflow\""}};
    return send_error_h(rq, c, MHD_HTTP_UNAUTHORIZED,
                        had_header ? "invalid bearer token" : "missing bearer token", h, 1);
}

/* ---- query parameters --------------------------------------------------- */

/* Parses query parameter `name` as an integer in lo..hi (digits only).
 * Absent: *ret = def. Returns false when present but invalid. */
static bool query_uint(struct MHD_Connection *c, const char *name, size_t lo, size_t hi, size_t def,
                       size_t *ret)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (!v) {
        *ret = def;
        return true;
    }
    if (*v == '\0')
        return false;
    size_t x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (x > hi)
            return false;   /* stop before overflow; already out of range */
        x = x * 10 + (size_t)(*p - '0');
    }
    if (x < lo || x > hi)
        return false;
    *ret = x;
    return true;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap >= n); '+' stays '+' in a path.
 * Returns the decoded length or -1 on a malformed escape. */
static long percent_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return (long)o;
}

/* ---- handlers ----------------------------------------------------------- */

static enum MHD_Result handle_trending(request *rq, struct MHD_Connection *c)
{
    size_t n;
    if (!query_uint(c, "n", 1, TRENDING_N_MAX, TRENDING_N_DEFAULT, &n))
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "n must be an integer from 1 to 1000");
    return send_json(rq, c, MHD_HTTP_OK, cf_engine_trending(rq->h->engine, n), NULL, 0);
}

static bool query_limit(struct MHD_Connection *c, size_t *ret)
{
    return query_uint(c, "limit", 1, QUERY_LIMIT_MAX, QUERY_LIMIT_DEFAULT, ret);
}

#define LIMIT_ERROR "limit must be an integer from 1 to 100000"

/* Parses time parameter `name`: integer epoch ms or RFC 3339. *ret_set
 * says whether it was given. Returns false when given but invalid. */
static bool query_time(struct MHD_Connection *c, const char *name, int64_t *ret, bool *ret_set)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    *ret_set = v != NULL;
    if (!v)
        return true;
    size_t n = strlen(v), i = v[0] == '-';
    bool digits = n > i && n - i <= 18;
    for (size_t k = i; k < n && digits; k++)
        digits = v[k] >= '0' && v[k] <= '9';
    if (digits) {
        *ret = strtoll(v, NULL, 10);
        return true;
    }
    return cf_rfc3339_parse(v, n, ret) == 0;
}

#define RANGE_ERROR "from and to must be epoch milliseconds or RFC 3339 times, from <= to"

static enum MHD_Result handle_windows(request *rq, struct MHD_Connection *c)
{
    cf_window_query q = {.type = -1, .page_url = NULL, .state = -1, .limit = QUERY_LIMIT_DEFAULT};
    const char *type = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "type");
    if (type) {
        if (strcmp(type, "tumbling") == 0)
            q.type = CF_WINDOW_TUMBLING;
        else if (strcmp(type, "sliding") == 0)
            q.type = CF_WINDOW_SLIDING;
        else
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "type must be tumbling or sliding");
    }
    const char *state = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "state");
    if (state) {
        if (strcmp(state, "open") == 0)
            q.state = 0;
        else if (strcmp(state, "closed") == 0)
            q.state = 1;
        else
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "state must be open or closed");
    }
    const char *page = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "page_url");
    if (page) {
        size_t pn = strlen(page);
        if (pn == 0 || pn > CF_PAGE_URL_MAX || !cf_utf8_valid(page, pn))
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                              "page_url must be 1 to 2048 bytes of valid UTF-8");
        q.page_url = page;
    }
    if (!query_limit(c, &q.limit))
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
    /* A time range also reads history.db (SPEC 16). */
    bool has_from, has_to;
    q.from = INT64_MIN;
    q.to = INT64_MAX;
    if (!query_time(c, "from", &q.from, &has_from) || !query_time(c, "to", &q.to, &has_to) ||
        q.from > q.to)
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, RANGE_ERROR);
    q.ranged = has_from || has_to;
    return send_json(rq, c, MHD_HTTP_OK, cf_engine_windows(rq->h->engine, &q), NULL, 0);
}

/* GET /api/v1/views/{name}/rollup?from=&to=&step=1h|1d (SPEC 16). */
static enum MHD_Result handle_rollup(request *rq, struct MHD_Connection *c)
{
    const char *p = rq->raw_uri + strlen(VIEWS_PREFIX);
    size_t n = strcspn(p, "?#") - strlen(ROLLUP_SUFFIX);
    char view[CF_HISTORY_VIEW_MAX + 1];
    long vn = n <= CF_HISTORY_VIEW_MAX ? percent_decode(p, n, view) : -1;
    if (vn <= 0)
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "unknown view");
    view[vn] = '\0';
    int64_t from, to, step;
    bool has_from, has_to;
    if (!query_time(c, "from", &from, &has_from) || !query_time(c, "to", &to, &has_to) ||
        !has_from || !has_to || from > to)
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, RANGE_ERROR " (both required)");
    const char *st = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "step");
    if (st && strcmp(st, "1h") == 0)
        step = 3600000;
    else if (st && strcmp(st, "1d") == 0)
        step = 86400000;
    else
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "step must be 1h or 1d");
    /* The answer has at most one item per step. */
    if ((to - from) / step > ROLLUP_STEPS_MAX)
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "from..to spans more than 100000 steps");
    cJSON *out = NULL;
    int rc = cf_engine_rollup(rq->h->engine, view, from, to, step, &out);
    if (rc == -ENOENT || rc == -EINVAL)
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, rc == -ENOENT ? "unknown view" : RANGE_ERROR);
    if (rc == -ENOTSUP)
        return send_error(rq, c, MHD_HTTP_NOT_FOUND, "history is off (--history off or no --data-dir)");
    /* Bounded work per request: too many hours not yet pre-aggregated. */
    if (rc == -EAGAIN)
        return send_error(rq, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "rollup hours of this range are still being rebuilt; retry shortly");
    if (rc < 0)
        return send_error(rq, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "history.db could not be read");
    return send_json(rq, c, MHD_HTTP_OK, out, NULL, 0);
}

static enum MHD_Result handle_user_sessions(request *rq, struct MHD_Connection *c)
{
    const char *p = rq->raw_uri + strlen(SESSIONS_PREFIX);
    size_t n = strcspn(p, "?#");
    char *user = malloc(n + 1);
    if (!user)
        return MHD_NO;
    long un = percent_decode(p, n, user);
    enum MHD_Result r;
    if (un <= 0 || (size_t)un > CF_USER_ID_MAX || !cf_utf8_valid(user, (size_t)un))
        r = send_error(rq, c, MHD_HTTP_BAD_REQUEST, "user_id must be 1 to 256 bytes of valid UTF-8");
    else
        r = send_json(rq, c, MHD_HTTP_OK, cf_engine_user_sessions(rq->h->engine, user, (size_t)un), NULL, 0);
    free(user);
    return r;
}

static void put_str(cf_buf *b, const char *s) { cf_buf_put(b, s, strlen(s)); }

/* Our own series after the engine's, in the same text format. */
static void append_http_metrics(cf_http *h, cf_buf *out)
{
    char line[512];
    put_str(out, "# HELP clickflow_http_responses_total HTTP responses sent, by status code.\n"
                 "# TYPE clickflow_http_responses_total counter\n");
    for (size_t k = 0; k <= N_COUNTED; k++) {
        uint64_t v = atomic_load_explicit(&h->responses[k], memory_order_relaxed);
        if (k < N_COUNTED)
            snprintf(line, sizeof line, "clickflow_http_responses_total{code=\"%u\"} %" PRIu64 "\n",
                     counted_status[k], v);
        else
            snprintf(line, sizeof line, "clickflow_http_responses_total{code=\"other\"} %" PRIu64 "\n", v);
        put_str(out, line);
    }
    snprintf(line, sizeof line,
             "# HELP clickflow_http_body_bytes_in_flight Request body bytes held in memory.\n"
             "# TYPE clickflow_http_body_bytes_in_flight gauge\n"
             "clickflow_http_body_bytes_in_flight %zu\n",
             cf_body_budget_in_flight(h->budget));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_body_budget_refused_total Requests answered 503 because their body did not fit "
             "the body budget.\n# TYPE clickflow_http_body_budget_refused_total counter\n"
             "clickflow_http_body_budget_refused_total %" PRIu64 "\n",
             atomic_load(&h->over_budget));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_connections Open HTTP connections.\n"
             "# TYPE clickflow_http_connections gauge\n"
             "clickflow_http_connections %u\n",
             atomic_load(&h->live_conns));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_connections_shed_total Connections closed to make room for new ones.\n"
             "# TYPE clickflow_http_connections_shed_total counter\n"
             "clickflow_http_connections_shed_total %" PRIu64 "\n",
             atomic_load(&h->shed));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_connections_timed_out_total Connections cut by the header, body-stall or "
             "request deadline.\n# TYPE clickflow_http_connections_timed_out_total counter\n"
             "clickflow_http_connections_timed_out_total %" PRIu64 "\n",
             atomic_load(&h->timed_out));
    put_str(out, line);
}

static enum MHD_Result handle_metrics(request *rq, struct MHD_Connection *c)
{
    cf_buf out;
    cf_buf_init(&out);
    cf_engine_metrics(rq->h->engine, &out);
    append_http_metrics(rq->h, &out);
    if (out.oom) {
        cf_buf_free(&out);
        return send_unavailable(rq, c, "out of memory");
    }
    struct MHD_Response *resp;
    if (out.len == 0) {
        cf_buf_free(&out);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(out.len, out.data, free_cb);
        if (!resp)
            cf_buf_free(&out);
    }
    return send_response(rq, c, MHD_HTTP_OK, resp, "text/plain; version=0.0.4; charset=utf-8", NULL, 0);
}

/* Parses a port number 1..65535 of n bytes; 0 when invalid. */
static unsigned parse_port(const char *s, size_t n)
{
    unsigned v = 0;
    if (n == 0 || n > 5)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535 ? v : 0;
}

/* Where the dashboard should open its WebSocket. Directly: our --ws-port,
 * path "/". Behind a reverse proxy that says so with X-Forwarded-Proto (see
 * deploy/nginx.conf.example), the proxy's own port and "/ws", so one origin
 * serves everything. The headers only change what this client is told. */
static void ws_endpoint(request *rq, struct MHD_Connection *c, unsigned *ret_port, const char **ret_path)
{
    *ret_port = rq->h->cfg.ws_port;
    *ret_path = "/";
    const char *proto = header(c, "X-Forwarded-Proto");
    if (!proto)
        return;
    bool https = strncasecmp(proto, "https", 5) == 0;
    unsigned port = 0;
    const char *fp = header(c, "X-Forwarded-Port");
    if (fp)
        port = parse_port(fp, strlen(fp));
    if (!port) {
        const char *host = header(c, "X-Forwarded-Host");
        if (!host)
            host = header(c, MHD_HTTP_HEADER_HOST);
        const char *colon = host ? strrchr(host, ':') : NULL;
        if (colon && !strchr(colon, ']'))
            port = parse_port(colon + 1, strlen(colon + 1));
    }
    *ret_port = port ? port : (https ? 443u : 80u);
    *ret_path = "/ws";
}

static enum MHD_Result handle_info(request *rq, struct MHD_Connection *c)
{
    unsigned ws_port;
    const char *ws_path;
    ws_endpoint(rq, c, &ws_port, &ws_path);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "version", CF_VERSION) ||
        !cJSON_AddNumberToObject(o, "ws_port", ws_port) || !cJSON_AddStringToObject(o, "ws_path", ws_path) ||
        !cJSON_AddBoolToObject(o, "read_token_required", rq->h->cfg.read_token[0] != '\0') ||
        !cJSON_AddBoolToObject(o, "ingest_token_required", rq->h->cfg.ingest_token[0] != '\0')) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    return send_json(rq, c, MHD_HTTP_OK, o, NULL, 0);
}

/* GET or DELETE /api/v1/tables/{name}/rows/{key}. */
static enum MHD_Result handle_table_row(request *rq, struct MHD_Connection *c, bool del)
{
    cJSON *row = NULL;
    const char *why = NULL;
    int r = cf_engine_table_row(rq->h->engine, rq->stream, rq->key, del, del ? NULL : &row, &why);
    switch (r) {
    case 0:
        if (del) {
            static const char ok[] = "{\"deleted\":1}";
            return send_static(rq, c, MHD_HTTP_OK, "application/json", ok, sizeof ok - 1, NULL, 0);
        }
        return send_json(rq, c, MHD_HTTP_OK, row, NULL, 0);
    case -ENOENT:
        return send_error(rq, c, MHD_HTTP_NOT_FOUND, "no table of that name");
    case -ESRCH:
        return send_error(rq, c, MHD_HTTP_NOT_FOUND, "no row with that key");
    case -EINVAL:
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, why ? why : "bad key");
    case -EAGAIN:
        return send_unavailable(rq, c, "server busy, retry later");
    case -ESHUTDOWN:
        return send_unavailable(rq, c, "server is shutting down");
    default:
        return send_unavailable(rq, c, r == -EIO ? "storage failure: not applied" : "out of memory");
    }
}

static enum MHD_Result handle_get(request *rq, struct MHD_Connection *c)
{
    cf_engine *e = rq->h->engine;
    size_t limit;
    /* The engine answers queries once recovery is done (the shards run). */
    bool asks_engine = rq->rt != R_HEALTHZ && rq->rt != R_READYZ && rq->rt != R_INFO && rq->rt != R_SITES;
    if (asks_engine && !cf_engine_ready(e))
        return send_unavailable(rq, c, "not ready: recovery in progress, retry later");
    switch (rq->rt) {
    case R_TRENDING:
        return handle_trending(rq, c);
    case R_WINDOWS:
        return handle_windows(rq, c);
    case R_LATE:
        if (!query_limit(c, &limit))
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_late(e, limit), NULL, 0);
    case R_SESSIONS:
        if (!query_limit(c, &limit))
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_sessions(e, limit), NULL, 0);
    case R_USER_SESSIONS:
        return handle_user_sessions(rq, c);
    case R_VIEW_ROLLUP:
        return handle_rollup(rq, c);
    case R_STATS:
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_stats(e), NULL, 0);
    case R_CLICK_EVENTS:
        if (!query_limit(c, &limit))
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_events(e, limit), NULL, 0);
    case R_INFO:
        return handle_info(rq, c);
    case R_VIEWS:
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_sql_views(e), NULL, 0);
    case R_STREAMS:
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_sql_streams(e), NULL, 0);
    case R_SITES:
        return send_json(rq, c, MHD_HTTP_OK, cf_compat_http_sites_json(rq->h->compat), NULL, 0);
    case R_TABLES:
        return send_json(rq, c, MHD_HTTP_OK, cf_engine_tables(e), NULL, 0);
    case R_TABLE_ROW:
        return handle_table_row(rq, c, false);
    case R_METRICS:
        return handle_metrics(rq, c);
    case R_HEALTHZ: {
        static const char ok[] = "{\"status\":\"ok\"}";
        return send_static(rq, c, MHD_HTTP_OK, "application/json", ok, sizeof ok - 1, NULL, 0);
    }
    case R_READYZ: {
        static const char ready[] = "{\"status\":\"ready\"}";
        if (cf_engine_ready(e))
            return send_static(rq, c, MHD_HTTP_OK, "application/json", ready, sizeof ready - 1, NULL, 0);
        return send_unavailable(rq, c, "not ready: recovery in progress");
    }
    default:
        break;
    }
    return send_error(rq, c, MHD_HTTP_NOT_FOUND, "not found");
}

static bool asset_exists(const char *url)
{
    const unsigned char *data;
    size_t len;
    const char *ctype;
    return strncmp(url, "/api/", 5) != 0 && cf_asset_find(url, &data, &len, &ctype);
}

static enum MHD_Result handle_asset(request *rq, struct MHD_Connection *c, const char *url, const char *method)
{
    const unsigned char *data;
    size_t len;
    const char *ctype;
    bool api = strncmp(url, "/api/", 5) == 0 || strcmp(url, "/api") == 0;
    if (api || !cf_asset_find(url, &data, &len, &ctype))
        return send_error(rq, c, MHD_HTTP_NOT_FOUND, "not found");
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (!is_get) {
        static const extra_header allow[] = {{MHD_HTTP_HEADER_ALLOW, "GET, HEAD"}};
        return send_error_h(rq, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", allow, 1);
    }
    /* The file names are not content-hashed: revalidate the page itself,
     * cache the rest briefly. */
    bool page = strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0;
    const extra_header h[] = {
        {MHD_HTTP_HEADER_CACHE_CONTROL, page ? "no-cache" : "public, max-age=300"},
        {"Referrer-Policy", "no-referrer"},
    };
    return send_static(rq, c, MHD_HTTP_OK, ctype, data, len, h, 2);
}

static enum MHD_Result handle_options(request *rq, struct MHD_Connection *c)
{
    const char *allow = route_allow(rq->rt);
    extra_header h[7];
    size_t n = 0;
    h[n++] = (extra_header){MHD_HTTP_HEADER_ALLOW, allow};
    /* A compatible endpoint's preflight carries no key: an origin of any
     * site key may go on (the request itself is checked against its key). */
    bool site_origin = rq->rt == R_COMPAT && !cors_allow(rq->h, c) &&
                       cf_compat_http_origin_known(rq->h->compat, header(c, "Origin"));
    if ((cors_allow(rq->h, c) || site_origin) && header(c, "Access-Control-Request-Method")) {
        if (site_origin) {
            h[n++] = (extra_header){"Access-Control-Allow-Origin", header(c, "Origin")};
            if (rq->h->cfg.n_cors_origins == 0)   /* else send_response adds Vary */
                h[n++] = (extra_header){MHD_HTTP_HEADER_VARY, "Origin"};
        }
        h[n++] = (extra_header){"Access-Control-Allow-Methods", allow};
        h[n++] = (extra_header){"Access-Control-Allow-Headers", "Content-Type, Authorization"};
        h[n++] = (extra_header){"Access-Control-Max-Age", CORS_MAX_AGE};
    }
    return send_static(rq, c, MHD_HTTP_NO_CONTENT, NULL, "", 0, h, n);
}

/* The SQL text of POST /api/v1/sql: text/plain or application/sql (any
 * parameters), or no type at all (curl --data-binary without -H). */
static bool sql_content_type(const char *ct)
{
    if (!ct)
        return true;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    return (n == 10 && strncasecmp(ct, "text/plain", n) == 0) ||
           (n == 15 && strncasecmp(ct, "application/sql", n) == 0);
}

/* Checks made when the headers of a POST are in, before any body byte is
 * read: auth, media type and Content-Length. Queues the refusal, or returns
 * MHD_YES with nothing queued when the body should be read. */
static enum MHD_Result begin_post(request *rq, struct MHD_Connection *c)
{
    const cf_config *cfg = &rq->h->cfg;
    if (rq->rt == R_SQL || rq->rt == R_QUERY) {
        /* Definitions change what every reader sees: they have a token of
         * their own when --admin-token is set. A pull query is a read,
         * whatever its method. */
        const char *token = rq->rt == R_QUERY     ? cfg->read_token
                            : cfg->admin_token[0] ? cfg->admin_token
                                                  : cfg->ingest_token;
        if (!authorized(c, token))
            return send_unauthorized(rq, c, header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        const char *ct = header(c, MHD_HTTP_HEADER_CONTENT_TYPE);
        rq->query_json = rq->rt == R_QUERY && ct && strncasecmp(ct, "application/json", 16) == 0;
        if (!rq->query_json && !sql_content_type(ct))
            return send_error(rq, c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                              rq->rt == R_QUERY
                                  ? "Content-Type must be text/plain, application/sql or application/json"
                                  : "Content-Type must be text/plain or application/sql");
        rq->body_limit = SQL_MAX_BODY;
    } else {
        bool authed = authorized(c, cfg->ingest_token);
        rq->bearer = authed && cfg->ingest_token[0];
        /* Without Authorization, events may still come in with a site key
         * (SPEC 15); compat_http.c checks that once the body is read. */
        if (!authed && rq->rt == R_EVENTS && !header(c, MHD_HTTP_HEADER_AUTHORIZATION) &&
            cf_compat_http_sites_any(rq->h->compat)) {
            rq->site_only = true;
            authed = true;
        }
        if (rq->rt == R_COMPAT) {
            /* The key may be in the body: compat_http.c decides once it is read.
             * The APIs take JSON in any content type (sendBeacon, text/plain). */
            rq->body_limit = cfg->max_body;
        } else if (!authed) {
            return send_unauthorized(rq, c, header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        } else if (rq->rt == R_EVENTS || rq->rt == R_STREAM_EVENTS || rq->rt == R_TABLE_ROWS) {
            if (cf_ingest_content_type(header(c, MHD_HTTP_HEADER_CONTENT_TYPE), &rq->fmt) < 0)
                return send_error(rq, c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                  "Content-Type must be application/json, text/plain or application/x-ndjson");
            rq->body_limit = cfg->max_body;
        } else {
            rq->body_limit = WATERMARK_MAX_BODY;
        }
    }
    const char *cl = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && v > rq->body_limit)
            return send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE,
                              rq->rt == R_EVENTS ? "request body is larger than --max-body"
                                                 : "request body is too large");
        if (errno == 0 && end != cl && v > 0) {
            /* The budget is taken as bytes arrive (a declared length costs
             * a client nothing). The preallocation is at most 1 MiB, which
             * malloc maps lazily: untouched pages cost no memory. */
            size_t pre = (size_t)v + 1 < ((size_t)1 << 20) ? (size_t)v + 1 : ((size_t)1 << 20);
            if (cf_buf_reserve(&rq->body, pre) < 0)
                return send_unavailable(rq, c, "out of memory");
        }
    }
    return MHD_YES;
}

/* The headers a site-key answer adds: Retry-After (seconds, 0: none), and
 * the site's own origin unless --cors-origin already answers it. Writes up
 * to 3 into h (retry holds the number's text) and returns how many. */
static size_t site_headers(request *rq, struct MHD_Connection *c, unsigned retry_after, bool allow_origin,
                           char retry[24], extra_header h[3])
{
    size_t n = 0;
    if (retry_after) {
        snprintf(retry, 24, "%u", retry_after);
        h[n++] = (extra_header){MHD_HTTP_HEADER_RETRY_AFTER, retry};
    }
    if (allow_origin && !cors_allow(rq->h, c)) {
        h[n++] = (extra_header){"Access-Control-Allow-Origin", header(c, "Origin")};
        if (rq->h->cfg.n_cors_origins == 0)   /* else send_response adds Vary */
            h[n++] = (extra_header){MHD_HTTP_HEADER_VARY, "Origin"};
    }
    return n;
}

static enum MHD_Result finish_events(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    const cf_config *cfg = &rq->h->cfg;
    cf_ingest ig;
    memset(&ig, 0, sizeof ig);
    cf_event_limits lim = {.max_future_ms = cfg->max_future_ms};
    const char *why = NULL;
    enum MHD_Result ret;
    /* Site keys (compat_http.c): may refuse, or rewrite the body with
     * derived user ids. */
    cf_site_gate gate;
    if (cf_compat_http_gate_events(rq->h->compat, c, rq->bearer, rq->site_only, rq->fmt == CF_BODY_NDJSON, body, len,
                                   &gate) < 0)
        return send_unavailable(rq, c, "out of memory");
    char retry[24];
    extra_header gh[3];
    size_t ngh = site_headers(rq, c, gate.retry_after, gate.allow_origin, retry, gh);
    if (gate.status) {
        free(gate.body);
        return send_error_h(rq, c, gate.status, gate.msg, gh, ngh);
    }
    if (gate.body) {
        body = gate.body;
        len = gate.len;
    }
    int r = cf_ingest_parse(&ig, rq->fmt, body, len, cfg->max_batch, &lim, wall_ms(), &why);
    if (r == -EBADMSG) {
        ret = send_error(rq, c, MHD_HTTP_BAD_REQUEST, why);
        goto out;
    }
    if (r == -E2BIG) {
        ret = send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE, why);
        goto out;
    }
    if (r < 0) {
        ret = send_unavailable(rq, c, "out of memory");
        goto out;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (cf_annotate_apply(rq->h->annotate, &ig, header(c, MHD_HTTP_HEADER_USER_AGENT),
                          header(c, MHD_HTTP_HEADER_REFERER), ci ? ci->client_addr : NULL) < 0) {
        ret = send_unavailable(rq, c, "out of memory");
        goto out;
    }
    cf_submit_result res = {0, 0};
    /* Rejected events are counted through the log too (a counters record), so
     * a request holding only rejected events must also wait for recovery: its
     * count would otherwise be neither logged nor in the recovered state. */
    if (ig.n_events == 0 && ig.rejected > 0 && !cf_engine_ready(rq->h->engine)) {
        ret = send_unavailable(rq, c, "not ready: recovery in progress, retry later");
        goto out;
    }
    if (ig.n_events > 0) {
        r = cf_engine_ready(rq->h->engine) ? cf_engine_submit(rq->h->engine, ig.events, ig.n_events, NULL, &res)
                                           : -EINPROGRESS;
        if (r == -EINPROGRESS) {
            ret = send_unavailable(rq, c, "not ready: recovery in progress, retry later");
            goto out;
        }
        if (r == -EAGAIN) {
            ret = send_unavailable(rq, c, "server busy: ingest queues are full, retry later");
            goto out;
        }
        if (r == -ESHUTDOWN) {
            ret = send_unavailable(rq, c, "server is shutting down");
            goto out;
        }
        if (r < 0) {
            ret = send_unavailable(rq, c, r == -EIO ? "storage failure: events not accepted"
                                                   : "events not accepted");
            goto out;
        }
    }
    /* Counted only with the 202: a refused request (503) is retried whole. */
    if (ig.rejected > 0)
        cf_engine_count_rejected(rq->h->engine, ig.rejected);
    cJSON *o = cJSON_CreateObject();
    cJSON *errs = NULL;
    bool ok = o && cJSON_AddNumberToObject(o, "accepted", (double)res.accepted) &&
              cJSON_AddNumberToObject(o, "duplicates", (double)res.duplicates) &&
              cJSON_AddNumberToObject(o, "rejected", (double)ig.rejected) &&
              (errs = cJSON_AddArrayToObject(o, "errors")) != NULL;
    for (size_t i = 0; ok && i < ig.n_errors; i++) {
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(errs, e) &&
             cJSON_AddNumberToObject(e, "index", (double)ig.errors[i].index) &&
             cJSON_AddStringToObject(e, "error", ig.errors[i].reason);
    }
    if (!ok) {
        /* The events are accepted; only the report failed. */
        cJSON_Delete(o);
        ret = MHD_NO;
        goto out;
    }
    ret = send_json(rq, c, MHD_HTTP_ACCEPTED, o, gh, ngh);
out:
    cf_ingest_free(&ig);
    free(gate.body);
    return ret;
}

static enum MHD_Result send_sql_error(request *rq, struct MHD_Connection *c, const sql_error *err);

static enum MHD_Result finish_sql(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cJSON *answer = NULL;
    sql_error err;
    int r = cf_engine_sql(rq->h->engine, body, len, false, &answer, &err);
    if (r == 0)
        return send_json(rq, c, MHD_HTTP_OK, answer, NULL, 0);
    if (r == -EINVAL)
        return send_sql_error(rq, c, &err);   /* SPEC 13: the problem and where it is */
    if (r == -ESHUTDOWN)
        return send_unavailable(rq, c, "server is shutting down");
    if (r == -EAGAIN)
        return send_unavailable(rq, c, "not ready: recovery in progress, retry later");
    return send_unavailable(rq, c, r == -EIO ? "storage failure: statements not applied"
                                             : "out of memory: statements not applied");
}

static enum MHD_Result send_sql_error(request *rq, struct MHD_Connection *c, const sql_error *err)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "error", err->message) ||
        !cJSON_AddNumberToObject(o, "line", err->line) ||
        !cJSON_AddNumberToObject(o, "column", err->column)) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    return send_json(rq, c, MHD_HTTP_BAD_REQUEST, o, NULL, 0);
}

static enum MHD_Result answer_query(request *rq, struct MHD_Connection *c, const char *text, size_t len)
{
    cJSON *answer = NULL;
    sql_error err;
    int r = cf_engine_query(rq->h->engine, text, len, &answer, &err);
    if (r == 0)
        return send_json(rq, c, MHD_HTTP_OK, answer, NULL, 0);
    if (r == -EINVAL)
        return send_sql_error(rq, c, &err);
    if (r == -EAGAIN)
        return send_unavailable(rq, c, "not ready: recovery in progress, retry later");
    if (r == -ESHUTDOWN)
        return send_unavailable(rq, c, "server is shutting down");
    return send_unavailable(rq, c, "out of memory: query not answered");
}

/* POST /api/v1/query: the SQL as text, or JSON {"sql": "..."}. */
static enum MHD_Result finish_query(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    if (!rq->query_json)
        return answer_query(rq, c, body, len);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
    const cJSON *q = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "sql") : NULL;
    if (!root || end != body + len || !cJSON_IsString(q)) {
        cJSON_Delete(root);
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "body must be {\"sql\": \"SELECT ...\"}");
    }
    enum MHD_Result ret = answer_query(rq, c, q->valuestring, strlen(q->valuestring));
    cJSON_Delete(root);
    return ret;
}

/* Sends what compat_http.c decided (its reply body is handed to MHD). */
static enum MHD_Result finish_compat(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cf_compat_reply r;
    if (cf_compat_http_handle(rq->h->compat, c, rq->compat_ep, body, len, &r) < 0)
        return send_unavailable(rq, c, "out of memory");
    char retry[24];
    extra_header h[3];
    size_t n = site_headers(rq, c, r.retry_after, r.allow_origin, retry, h);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(r.len, r.body, free_cb);
    if (!resp) {
        free(r.body);
        return MHD_NO;
    }
    return send_response(rq, c, r.status, resp, r.ctype, h, n);
}

/* POST /api/v1/streams/{name}/events: SPEC 3's answers for a declared stream. */
static enum MHD_Result finish_stream_events(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cf_stream_batch b;
    memset(&b, 0, sizeof b);
    const char *why = NULL;
    cf_submit_result res;
    int r = cf_engine_stream_events(rq->h->engine, rq->stream, rq->fmt, body, len, wall_ms(), &b,
                                    &why, &res);
    enum MHD_Result ret;
    if (r == -ENOENT) {
        ret = send_error(rq, c, MHD_HTTP_NOT_FOUND, "no declared stream of that name (clicks: POST /api/v1/events)");
    } else if (r == -EBADMSG) {
        ret = send_error(rq, c, MHD_HTTP_BAD_REQUEST, why ? why : "body is not JSON");
    } else if (r == -E2BIG) {
        ret = send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE, "more events than --max-batch");
    } else if (r == -EAGAIN) {
        ret = send_unavailable(rq, c, "server busy, retry later");
    } else if (r == -ESHUTDOWN) {
        ret = send_unavailable(rq, c, "server is shutting down");
    } else if (r < 0) {
        ret = send_unavailable(rq, c, r == -EIO ? "storage failure: events not accepted" : "out of memory");
    } else {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "accepted", (double)res.accepted) ||
            !cJSON_AddNumberToObject(o, "duplicates", (double)res.duplicates) ||
            !cJSON_AddNumberToObject(o, "rejected", (double)b.rejected)) {
            cJSON_Delete(o);
            cf_stream_batch_free(&b);
            return MHD_NO;
        }
        cJSON_AddItemToObject(o, "errors", b.errors);
        b.errors = NULL;
        ret = send_json(rq, c, MHD_HTTP_ACCEPTED, o, NULL, 0);
    }
    cf_stream_batch_free(&b);
    return ret;
}

/* POST /api/v1/tables/{name}/rows: SPEC 3's answers for a table's rows. */
static enum MHD_Result finish_table_rows(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cf_stream_batch b;
    memset(&b, 0, sizeof b);
    const char *why = NULL;
    cf_submit_result res;
    int r = cf_engine_table_rows(rq->h->engine, rq->stream, rq->fmt, body, len, wall_ms(), &b, &why,
                                 &res);
    enum MHD_Result ret;
    if (r == -ENOENT) {
        ret = send_error(rq, c, MHD_HTTP_NOT_FOUND, "no table of that name");
    } else if (r == -EBADMSG) {
        ret = send_error(rq, c, MHD_HTTP_BAD_REQUEST, why ? why : "body is not JSON");
    } else if (r == -E2BIG) {
        ret = send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE, "more rows than --max-batch");
    } else if (r == -EAGAIN) {
        ret = send_unavailable(rq, c, "server busy, retry later");
    } else if (r == -ESHUTDOWN) {
        ret = send_unavailable(rq, c, "server is shutting down");
    } else if (r < 0) {
        ret = send_unavailable(rq, c, r == -EIO ? "storage failure: rows not applied" : "out of memory");
    } else {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "accepted", (double)res.accepted) ||
            !cJSON_AddNumberToObject(o, "duplicates", 0) ||
            !cJSON_AddNumberToObject(o, "rejected", (double)b.rejected)) {
            cJSON_Delete(o);
            cf_stream_batch_free(&b);
            return MHD_NO;
        }
        cJSON_AddItemToObject(o, "errors", b.errors);
        b.errors = NULL;
        ret = send_json(rq, c, MHD_HTTP_ACCEPTED, o, NULL, 0);
    }
    cf_stream_batch_free(&b);
    return ret;
}

static enum MHD_Result finish_watermark(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
    if (!root || end != body + len) {
        cJSON_Delete(root);
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "body is not valid JSON");
    }
    const cJSON *w = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "watermark") : NULL;
    /* valueint saturates at INT_MAX: check the double instead (exact up to
     * 2^53). */
    double d = w && cJSON_IsNumber(w) ? w->valuedouble : NAN;
    cJSON_Delete(root);
    if (!(fabs(d) <= 9007199254740992.0) || d != floor(d))
        return send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                          "body must be {\"watermark\": <integer epoch milliseconds>}");
    int64_t wm = 0;
    int r = cf_engine_raise_watermark(rq->h->engine, (int64_t)d, &wm);
    if (r == -ESHUTDOWN)
        return send_unavailable(rq, c, "server is shutting down");
    if (r == -EAGAIN)
        return send_unavailable(rq, c, "server busy, retry later");
    if (r < 0)
        return send_unavailable(rq, c, r == -EIO ? "storage failure: watermark not raised" : "watermark not raised");
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "watermark", (double)wm)) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    return send_json(rq, c, MHD_HTTP_OK, o, NULL, 0);
}

/* ---- request hygiene ---------------------------------------------------- */

typedef struct framing {
    unsigned n_length;          /* Content-Length headers */
    bool lengths_differ;
    bool transfer_encoding;
    const char *first_length;
} framing;

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->n_length++ == 0)
            f->first_length = value ? value : "";
        else if (strcmp(f->first_length, value ? value : "") != 0)
            f->lengths_differ = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->transfer_encoding = true;
    }
    return MHD_YES;
}

/* RFC 9112 6.3: a request with both Transfer-Encoding and Content-Length,
 * or with differing Content-Length values, has no trustworthy end, so a
 * proxy in front of us may see a different request boundary than we do
 * (request smuggling). libmicrohttpd 0.9.75 accepts both; we refuse them
 * and close the connection. Returns the reason, or NULL when the framing is
 * sound. O(headers). */
static const char *framing_error(struct MHD_Connection *c)
{
    framing f = {0, false, false, NULL};
    MHD_get_connection_values(c, MHD_HEADER_KIND, framing_header, &f);
    if (f.transfer_encoding && f.n_length > 0)
        return "a request must not carry both Content-Length and Transfer-Encoding";
    if (f.lengths_differ)
        return "conflicting Content-Length headers";
    return NULL;
}

/* True when the raw request target holds no percent-encoded NUL and no raw
 * control byte. libmicrohttpd decodes %00 into a NUL that silently cuts the
 * decoded path and query values (so "/index.html%00.js" would be served as
 * "/index.html", and a page_url or user_id would match a truncated key);
 * refusing the request is the only answer that cannot be misread. O(n). */
static bool target_clean(const char *uri)
{
    for (const unsigned char *p = (const unsigned char *)uri; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return false;
        if (p[0] == '%' && p[1] == '0' && p[2] == '0')
            return false;
    }
    return true;
}

/* Answers 400 and makes libmicrohttpd close the connection after it: the
 * request's framing cannot be trusted, so neither can whatever follows. */
static enum MHD_Result send_bad_framing(request *rq, struct MHD_Connection *c, const char *msg)
{
    static const extra_header close_hdr[] = {{MHD_HTTP_HEADER_CONNECTION, "close"}};
    return send_error_h(rq, c, MHD_HTTP_BAD_REQUEST, msg, close_hdr, 1);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Caps MHD's inactivity timeout by what is left of the request deadline,
 * so a client that trickles bytes cannot outlive the deadline by much. */
static void apply_deadline(request *rq, struct MHD_Connection *c, int64_t left_ms)
{
    int64_t t = rq->h->cfg.connection_timeout_ms;
    if (left_ms < t)
        t = left_ms;
    unsigned secs = (unsigned)((t + 999) / 1000);
    if (secs == 0)
        secs = 1;
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, secs);
}

/* Answers every request but an accepted POST, once it is complete. */
static enum MHD_Result handle_request(request *rq, struct MHD_Connection *c, const char *url, const char *method)
{
    cf_http *h = rq->h;
    if (strcmp(method, "OPTIONS") == 0 && rq->rt != R_NONE)
        return handle_options(rq, c);
    if (rq->rt == R_NONE) {
        if (strcmp(method, "OPTIONS") == 0 && asset_exists(url)) {
            static const extra_header allow[] = {{MHD_HTTP_HEADER_ALLOW, "GET, HEAD, OPTIONS"}};
            return send_static(rq, c, MHD_HTTP_NO_CONTENT, NULL, "", 0, allow, 1);
        }
        return handle_asset(rq, c, url, method);
    }
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (rq->rt == R_STREAM_EVENTS && !cf_engine_has_stream(rq->h->engine, rq->stream))
        return send_error(rq, c, MHD_HTTP_NOT_FOUND, "not found");  /* no such declared stream */
    if (rq->rt == R_QUERY && is_get) {
        if (!authorized(c, h->cfg.read_token))
            return send_unauthorized(rq, c, header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "sql");
        if (!q)
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST, "the sql parameter is required");
        return answer_query(rq, c, q, strlen(q));
    }
    if (rq->rt == R_TABLE_ROW && strcmp(method, "DELETE") == 0) {
        /* A delete is a write: the ingest token, like the upserts. */
        if (!authorized(c, h->cfg.ingest_token))
            return send_unauthorized(rq, c, header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        if (!cf_engine_ready(h->engine))
            return send_unavailable(rq, c, "not ready: recovery in progress, retry later");
        return handle_table_row(rq, c, true);
    }
    if (route_is_post(rq->rt) || !is_get) {
        const extra_header allow[] = {{MHD_HTTP_HEADER_ALLOW, route_allow(rq->rt)}};
        return send_error_h(rq, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", allow, 1);
    }
    if (route_needs_read_token(rq->rt) && !authorized(c, h->cfg.read_token))
        return send_unauthorized(rq, c, header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
    return handle_get(rq, c);
}

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
    int64_t now = mono_ms();
    int64_t left = h->cfg.request_deadline_ms - (now - rq->start_ms);

    if (!rq->headers_done) {
        /* Headers are in. Only a POST is answered right away, when it is
         * refused (auth, type, size): MHD then skips its body and closes the
         * connection. Everything else is answered on the next call, once the
         * request is complete, so the connection can be kept alive. */
        rq->headers_done = true;
        if (left <= 0)
            return send_error(rq, c, MHD_HTTP_REQUEST_TIMEOUT, "request deadline exceeded");
        const char *bad = framing_error(c);
        if (bad)
            return send_bad_framing(rq, c, bad);
        if (!target_clean(rq->raw_uri))
            return send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                              "the URL must not contain %00 (NUL) or control characters");
        apply_deadline(rq, c, left);
        rq->rt = find_route(rq->raw_uri, strcspn(rq->raw_uri, "?#"));
        if (rq->rt == R_STREAM_EVENTS)
            stream_events_name(rq->raw_uri, strcspn(rq->raw_uri, "?#"), rq->stream, sizeof rq->stream);
        if (rq->rt == R_TABLE_ROWS || rq->rt == R_TABLE_ROW)
            table_route(rq->raw_uri, strcspn(rq->raw_uri, "?#"), rq);
        int64_t end = rq->start_ms + h->cfg.request_deadline_ms;
        if (rq->rt == R_COMPAT)
            rq->compat_ep = cf_compat_route(rq->raw_uri, strcspn(rq->raw_uri, "?#"));
        if (route_is_post(rq->rt) && strcmp(method, "POST") == 0) {
            rq->reading_body = true;
            if (rq->conn) {
                /* The body must keep arriving: a stalled one is cut long
                 * before the request deadline, and so gives its share of
                 * the body budget back. */
                conn_set(&rq->conn->phase, PHASE_BODY);
                conn_set(&rq->conn->deadline_ms, min64(end, now + h->cfg.body_stall_timeout_ms));
            }
            return begin_post(rq, c);
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
        apply_deadline(rq, c, left);
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
            !budget_take(h, rq, rq->body.len + n - rq->reserved)) {
            /* Refused anyway (503 at the end): what it holds goes back to
             * the others now. */
            rq->over_budget = true;
            budget_release(h, rq);
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
        return send_unavailable(rq, c, "server busy: too many request bodies in flight, retry later");
    if (rq->too_big)
        return send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE,
                          rq->rt == R_EVENTS ? "request body is larger than --max-body" : "request body is too large");
    cf_buf_put_u8(&rq->body, 0);
    if (rq->body.oom)
        return send_unavailable(rq, c, "out of memory");
    rq->body.len--;
    char *body = (char *)rq->body.data;
    size_t len = rq->body.len;
    if (rq->rt == R_EVENTS)
        return finish_events(rq, c, body, len);
    if (rq->rt == R_SQL)
        return finish_sql(rq, c, body, len);
    if (rq->rt == R_QUERY)
        return finish_query(rq, c, body, len);
    if (rq->rt == R_STREAM_EVENTS)
        return finish_stream_events(rq, c, body, len);
    if (rq->rt == R_TABLE_ROWS)
        return finish_table_rows(rq, c, body, len);
    if (rq->rt == R_COMPAT)
        return finish_compat(rq, c, body, len);
    return finish_watermark(rq, c, body, len);
}

static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *c)
{
    request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    rq->raw_uri = strdup(uri);
    if (!rq->raw_uri) {
        free(rq);
        return NULL;
    }
    cf_http *h = cls;
    rq->h = h;
    rq->start_ms = mono_ms();
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    rq->conn = ci ? ci->socket_context : NULL;
    if (rq->conn) {
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
        rq->stripe = connection_stripe(c);
    }
    return rq;
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    cf_http *h = cls;
    request *rq = *con_cls;
    *con_cls = NULL;
    if (rq) {
        budget_release(h, rq);
        /* Until the next request line: the idle timeout, then the header
         * timeout. */
        if (rq->conn) {
            int64_t now = mono_ms();
            conn_set(&rq->conn->served, atomic_load_explicit(&rq->conn->served, memory_order_relaxed) + 1);
            conn_set(&rq->conn->since_ms, now);
            conn_set(&rq->conn->phase, PHASE_WAITING);
            conn_set(&rq->conn->deadline_ms, now + h->cfg.connection_timeout_ms + h->cfg.header_timeout_ms);
        }
        cf_buf_free(&rq->body);
        free(rq->raw_uri);
        free(rq);
    }
    /* A kept-alive connection waits for its next request with the full
     * inactivity timeout again. */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)((h->cfg.connection_timeout_ms + 999) / 1000));
}

/* Picks the connection to shed when the table is nearly full: never one
 * being answered; first those that have not completed a single request
 * (slow or silent openers), then idle keep-alive ones, the oldest first in
 * each group (a client that just connected and is sending its request is
 * the last of them to go); last, bodies in progress, the one with the
 * fewest bytes first (trickling bodies that keep within the stall timeout
 * could otherwise hold the table). Caller holds reaper_mu. O(n). */
static conn_entry *shed_victim(cf_http *h, const conn_entry *except)
{
    conn_entry *best = NULL;
    int best_rank = 0;
    int64_t best_key = 0;
    for (conn_entry *e = h->conns; e; e = e->next) {
        if (e == except || e->cut)
            continue;
        int phase = atomic_load(&e->phase);
        if (phase == PHASE_BUSY)
            continue;
        int rank;
        int64_t key;
        if (phase == PHASE_BODY) {
            rank = 2;
            key = (int64_t)atomic_load_explicit(&e->body_bytes, memory_order_relaxed);
        } else {
            rank = atomic_load(&e->served) > 0;
            key = atomic_load(&e->since_ms);
        }
        if (!best || rank < best_rank || (rank == best_rank && key < best_key)) {
            best = e;
            best_rank = rank;
            best_key = key;
        }
    }
    return best;
}

/* Hangs up on e (its CLOSED notification follows). Caller holds reaper_mu. */
static void cut_locked(cf_http *h, conn_entry *e)
{
    e->cut = true;
    h->n_cut++;
    atomic_store(&h->live_conns, h->n_conns - h->n_cut);
    shutdown(e->fd, SHUT_RDWR);
}

static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    cf_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_entry *e = ci ? calloc(1, sizeof *e) : NULL;
        if (!e)
            return;   /* not watched: MHD's inactivity timeout still applies */
        e->fd = ci->connect_fd;
        e->stripe = connection_stripe(c);
        int64_t now = mono_ms();
        atomic_store(&e->since_ms, now);
        atomic_store(&e->phase, PHASE_WAITING);
        /* The request headers must be in within the header timeout (nginx's
         * client_header_timeout): a silent or trickling opener is cut. */
        atomic_store(&e->deadline_ms, now + h->cfg.header_timeout_ms);
        pthread_mutex_lock(&h->reaper_mu);
        e->next = h->conns;
        if (h->conns)
            h->conns->prev = e;
        h->conns = e;
        h->n_conns++;
        if ((uint64_t)e->fd >= h->fd_ceiling) {
            /* The descriptors below the log's reserve are gone (taken by
             * WebSocket or other sockets): this one cannot stay. */
            cut_locked(h, e);
            atomic_fetch_add_explicit(&h->shed, 1, memory_order_relaxed);
        }
        /* Nearly full: make room by shedding the connection that has given
         * least, rather than let the table fill and new clients wait in the
         * listen backlog until some timeout frees a slot. */
        if (h->n_conns - h->n_cut > h->shed_at) {
            conn_entry *v = shed_victim(h, e);
            if (v) {
                cut_locked(h, v);
                atomic_fetch_add_explicit(&h->shed, 1, memory_order_relaxed);
            }
        }
        atomic_store(&h->live_conns, h->n_conns - h->n_cut);
        pthread_mutex_unlock(&h->reaper_mu);
        *socket_context = e;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_entry *e = *socket_context;
        if (!e)
            return;
        pthread_mutex_lock(&h->reaper_mu);
        if (e->prev)
            e->prev->next = e->next;
        else
            h->conns = e->next;
        if (e->next)
            e->next->prev = e->prev;
        h->n_conns--;
        if (e->cut)
            h->n_cut--;
        atomic_store(&h->live_conns, h->n_conns - h->n_cut);
        pthread_mutex_unlock(&h->reaper_mu);
        free(e);
        *socket_context = NULL;
    }
}

/* Every REAPER_PERIOD_MS: hang up on connections past their deadline.
 * O(connections) per pass. */
static void *reaper_main(void *arg)
{
    cf_http *h = arg;
    pthread_mutex_lock(&h->reaper_mu);
    while (!h->reaper_stop) {
        int64_t now = mono_ms();
        for (conn_entry *e = h->conns; e; e = e->next) {
            int64_t d = atomic_load(&e->deadline_ms);
            if (d != 0 && now >= d && !e->cut) {
                cut_locked(h, e);
                atomic_fetch_add_explicit(&h->timed_out, 1, memory_order_relaxed);
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += REAPER_PERIOD_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->reaper_cv, &h->reaper_mu, &ts);
    }
    pthread_mutex_unlock(&h->reaper_mu);
    return NULL;
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
    cf_http *h = calloc(1, sizeof *h);
    if (!h) {
        *ret_err = "out of memory";
        return NULL;
    }
    h->cfg = *cfg;
    h->engine = engine;
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
    pthread_condattr_destroy(&ca);

    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const struct sockaddr *sa;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (inet_pton(AF_INET, cfg->bind, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons(cfg->http_port);
        sa = (const struct sockaddr *)&sin;
    } else if (inet_pton(AF_INET6, cfg->bind, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(cfg->http_port);
        sa = (const struct sockaddr *)&sin6;
        flags |= MHD_USE_IPv6;
    } else {
        cf_http_stop(h);
        *ret_err = "--bind is not an IP address";
        return NULL;
    }
    unsigned timeout_s = (unsigned)((cfg->connection_timeout_ms + 999) / 1000);
    errno = 0;
    h->daemon = MHD_start_daemon(
        flags, cfg->http_port, NULL, NULL, access_handler, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->http_threads > 1 ? cfg->http_threads : 0),
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_connections_per_ip,
        MHD_OPTION_URI_LOG_CALLBACK, uri_logger, h,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, notify_connection, h,
        MHD_OPTION_END);
    if (!h->daemon) {
        int saved = errno;
        cf_http_stop(h);
        errno = saved;
        *ret_err = "cannot start the HTTP server (is the port in use?)";
        return NULL;
    }
    if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
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
    cf_body_budget_free(h->budget);
    cf_compat_http_free(h->compat);
    cf_annotate_free(h->annotate);
    free(h);
}
