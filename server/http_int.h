/* http_int: what the HTTP server's files share, private to them (the public
 * API is http.h). The server is one object whose jobs live in one file each:
 *
 *   http.c       the libmicrohttpd daemon (start, stop), the request life
 *                cycle (uri_logger, access_handler, request_completed),
 *                routing, the CORS preflight
 *   http_accept.c  the listening socket and the thread accepting on it
 *   http_resp.c  the responses: http_send_response() and the helpers on it
 *   http_auth.c  the bearer-token checks
 *   http_conn.c  the connection table: reaper, header and body-stall
 *                deadlines, shedding, the body budget, framing and URL checks
 *   http_get.c   the GET endpoints (queries, rollups, /metrics, info) and
 *                the dashboard's files
 *   http_post.c  the POST endpoints: checks before the body, then ingest,
 *                watermark, SQL statements, pull queries, declared streams
 *                and the compatible endpoints (compat_http.c)
 *
 * A request's life: MHD parses the request line and calls uri_logger(),
 * which allocates our per-request state (so the absolute deadline starts
 * there, and the raw, still percent-encoded URI is kept); then access()
 * runs once with the headers, once per upload chunk and once at the end;
 * request_completed() frees the state. Every response goes through
 * http_send_response(), which adds the headers every answer carries.
 *
 * The calls go one way: http.c -> http_conn.c, http_get.c, http_post.c ->
 * http_auth.c -> http_resp.c; nothing calls back up. */
#ifndef CF_HTTP_INT_H
#define CF_HTTP_INT_H

#include "http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "annotate.h"
#include "body_budget.h"
#include "cf_buf.h"
#include "clock.h"
#include "compat_http.h"
#include "ingest.h"

/* The HTTP layer's clock for its timeouts, deadlines and idle times, in
 * milliseconds: CLOCK_MONOTONIC_COARSE (the tick, 1-4 ms), which the vDSO
 * reads without the TSC. Its reads were 1.3% of the server under
 * single-event POSTs (five per request, issue 15); timeouts of seconds do
 * not need better. Every deadline of http*.c is set and checked with it. */
static inline int64_t http_now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC_COARSE);
}

/* The reaper enforces our deadlines even while MHD is still collecting
 * headers (when our handler is not called at all): every connection is
 * registered with a deadline, and a thread shuts down the socket of any
 * connection past it; MHD then sees the hang-up and closes the connection
 * itself. Entries leave the list in MHD's CLOSED notification, which comes
 * before MHD closes the fd, so neither the reaper nor the shedding (both in
 * http_conn.c) ever touches a reused descriptor (both hold reaper_mu).
 *
 * A connection's deadline moves with its phase:
 *   opened, or idle after a request   -> headers within --header-timeout
 *                                        (after --connection-timeout idle)
 *   request line in                   -> the same, at most --request-deadline
 *   body                              -> --body-stall-timeout after the last
 *                                        body byte, at most --request-deadline
 *   answering                         -> none */

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
    /* (the connection's thread) the inactivity timeout libmicrohttpd holds
     * for it, in seconds: http_set_timeout skips setting the same again. */
    unsigned mhd_timeout_s;
    /* (the connection's thread) the last request's body buffer, emptied,
     * for the next request: one malloc and free less per request (issue
     * 15). Kept only up to HTTP_BODY_KEEP bytes (16 MiB for 4096 idle
     * connections at most). */
    cf_buf spare_body;
    /* (the connection's thread) the last request's state block (struct
     * request and its URI), for the next request instead of a calloc and a
     * free (issue 15); at most HTTP_RQ_KEEP bytes. */
    void *spare_rq;
    size_t spare_rq_cap;
    /* (the connection's thread) the last POST /api/v1/events' enrichment
     * buffer (cf_ingest.enrich), emptied, up to HTTP_BODY_KEEP bytes. */
    cf_buf spare_enrich;
} conn_entry;

#define HTTP_BODY_KEEP ((size_t)4096)
/* A kept request block has room for a URI of about 1 KiB. */
#define HTTP_RQ_KEEP (sizeof(request) + 1024)

/* The fields above are written only by the thread serving the connection
 * and read by the reaper and the shedding, which can act on a value a
 * moment old either way: relaxed stores keep the request path free of
 * fences. */
#define conn_set(field, v) atomic_store_explicit((field), (v), memory_order_relaxed)

/* The status codes counted one by one; anything else is "other". */
static const unsigned counted_status[] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 413, 415, 429, 503};
#define N_COUNTED (sizeof counted_status / sizeof counted_status[0])

/* Rows of per-thread counters (http_stripe): at least the HTTP threads of
 * a 2-4 core machine each on their own; more threads share rows, which is
 * still correct (the adds are atomic). */
#define HTTP_STRIPES 8

/* One stripe's counters, alone on its cache lines. */
typedef struct http_status_row {
    _Alignas(64) _Atomic uint64_t n[N_COUNTED + 1];
} http_status_row;

/* The pre-built single-event answers (http_answers_get). */
typedef enum http_answer_kind {
    HTTP_ANSWER_NONE = 0,
    HTTP_ANSWER_ONE,    /* {"accepted":1,"duplicates":0,...} */
    HTTP_ANSWER_DUP,    /* {"accepted":0,"duplicates":1,...} */
} http_answer_kind;

/* A thread's pair, with its own Date header: libmicrohttpd 0.9.75 adds no
 * Date of its own to a response that has one, and its own costs a gmtime_r
 * per answer, which takes glibc's process-wide tzset lock (both workers
 * wrote that lock's line at every request, issue 15). The pair is built
 * again when the second changes; a connection still sending the last one
 * holds its own reference. */
typedef struct http_answers {
    struct http_answers *next;  /* (answers_mu) */
    int64_t second;             /* of the Date header; -1: not built */
    struct MHD_Response *one, *dup;
} http_answers;

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
    /* The listening socket and its accept thread (http_accept.c). */
    int listen_fd;                  /* -1: none */
    pthread_cond_t accept_cv;       /* (reaper_mu) a connection closed */
    unsigned n_handed;              /* (reaper_mu) handed to MHD, not started yet */
    bool accept_started;
    bool accept_warned;             /* (acceptor) a retried accept error was logged */
    atomic_bool accept_stopping;
    pthread_t acceptor;
    /* The Segment, Plausible and Umami endpoints and the site keys. */
    cf_compat_http *compat;
    cf_annotate *annotate;          /* SPEC 15 enrichment of ingested events */
    /* Requests parked until their events are durable (http_park.c). */
    pthread_mutex_t park_mu;
    pthread_cond_t park_cv;
    struct request *parked;         /* (park_mu) oldest first */
    struct request *parked_tail;    /* (park_mu) */
    bool http_park_stop;                 /* (park_mu) no new parking; drain and exit */
    bool park_started;
    pthread_t park_thread;
    _Atomic unsigned n_parked;      /* gauge for /metrics */
    _Atomic uint64_t parked_total;
    _Atomic uint64_t park_rounds;   /* commit rounds of the committer (/metrics) */
    unsigned park_want;             /* (park_mu) wake the gathering committer at this many parked, 0 = at any */
    bool park_off;                  /* benchmark seam CLICKFLOW_BENCH_NO_PARK: the inline wait */
    bool gather_off;                /* benchmark seam CLICKFLOW_BENCH_NO_GATHER: rounds start at once */
    /* The two 202 answers of a single-event request that carry no
     * per-request header (SPEC 3's counts: one accepted, or one duplicate),
     * built once per HTTP thread (http_answers_get) and queued on every
     * such request: a fresh response per request (text, response object,
     * four header copies, their frees) was about 5% of the server's samples
     * under S1 (issue 15). One pair per thread, not one for the server:
     * libmicrohttpd takes and drops a reference under the response's own
     * mutex at every queue and destroy, and with one pair both workers
     * wrote that mutex's cache line at every request. */
    pthread_mutex_t answers_mu;
    struct http_answers *answers;   /* (answers_mu) every thread's pair, freed at stop */
    uint64_t answers_gen;           /* this server's mark in the threads' pointers */
    /* Responses by status code, for /metrics: one row per stripe, a thread
     * adds to its own (http_stripe), so the two workers do not write one
     * cache line at every request; /metrics sums them. */
    http_status_row responses[HTTP_STRIPES];
};

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

/* One walk over the request head when the headers are in (http_head_scan):
 * its cost against --max-request-head, its framing, and the headers the
 * POST path reads, each the first of its name as MHD_lookup_connection_value
 * gives it. The four lookups and two walks it replaces were about 1,000
 * instructions per single-event request (issue 15). Values live in
 * libmicrohttpd's connection memory until the request completes. */
typedef struct http_head {
    size_t cost;                /* bytes plus 32 per header, cookie and query argument */
    const char *framing_error;  /* NULL: Content-Length / Transfer-Encoding are sound */
    const char *content_type, *content_length, *user_agent, *referer;
} http_head;

typedef struct request {
    cf_http *h;
    int64_t start_ms;       /* monotonic; the absolute deadline counts from here */
    char *raw_uri;          /* as sent, percent-encoding intact */
    size_t cap;             /* bytes of this block (the URI follows the struct) */
    bool headers_done;      /* access() saw the headers */
    bool query_json;        /* POST /api/v1/query: the body is {"sql": ...} */
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
    /* Parked (http_park.c): the events are logged, the connection is
     * suspended until they are durable, then the answer below goes out. */
    int park_state;             /* PARK_NONE, PARK_WAITING, PARK_DONE */
    int park_rc;                /* (PARK_DONE) 0 durable, -EIO, -ETIMEDOUT */
    struct request *park_next;  /* (park_mu) */
    struct MHD_Connection *park_conn;
    int64_t park_upto;          /* LSN that must be durable */
    int64_t park_deadline_ms;   /* monotonic: the request deadline */
    char *park_answer;          /* the 202 body (JSON text), sent once durable */
    size_t park_answer_len;
    http_answer_kind park_shared;       /* or this shared answer (taken when sent) */
    unsigned park_retry_after;  /* site_headers() inputs, kept for the answer */
    bool park_allow_origin;
    http_head head;         /* http_head_scan, with the headers */
    /* Last: uri_logger zeroes a request up to here only (HTTP_RQ_ZERO), and
     * these are written by the routes that read them (find_route's
     * callers); they were two thirds of its 584 bytes of memset per
     * request. */
    char stream[128];       /* R_STREAM_EVENTS: the stream's name; R_TABLE_*: the table's */
    char key[256];          /* R_TABLE_ROW: the key, percent-decoded */
} request;

/* The bytes of a request that start zeroed (all but stream and key). */
#define HTTP_RQ_ZERO offsetof(request, stream)

enum { PARK_NONE = 0, PARK_WAITING, PARK_DONE };

typedef struct extra_header {
    const char *name, *value;
} extra_header;

#define SESSIONS_PREFIX "/api/v1/sessions/"
#define STREAMS_PREFIX "/api/v1/streams/"
#define VIEWS_PREFIX "/api/v1/views/"
#define ROLLUP_SUFFIX "/rollup"

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- http_resp.c: responses --------------------------------------------- */

const char *http_header(struct MHD_Connection *c, const char *name);
/* The Access-Control-Allow-Origin value for this request's Origin, or NULL
 * when the origin is not allowed (or there is none). */
const char *http_cors_allow(const cf_http *h, struct MHD_Connection *c);
/* Queues resp with the headers every answer carries, then drops our
 * reference. Takes ownership of resp (may be NULL after an allocation
 * failure: the connection is then closed). */
enum MHD_Result http_send_response(request *rq, struct MHD_Connection *c, unsigned status,
                              struct MHD_Response *resp, const char *ctype,
                              const extra_header *extra, size_t n_extra);
void http_free_cb(void *p);
/* Sends a cJSON document (consumed) as application/json. NULL json means
 * the engine could not answer (stopping or out of memory): 503. */
enum MHD_Result http_send_json(request *rq, struct MHD_Connection *c, unsigned status, cJSON *json,
                          const extra_header *extra, size_t n_extra);
/* Queues a shared, pre-built response (kept: not destroyed here) and
 * counts its status. */
enum MHD_Result http_send_shared(request *rq, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp);
/* This thread's shared answer of that kind for h, with the current Date
 * (built at its first call and again each second; NULL when out of memory:
 * answer the request the general way). Keys and order as http_post.c's
 * events_answer prints them. Not owned: queue it with http_send_shared
 * before this thread asks again (the next second's call drops it). */
struct MHD_Response *http_answers_get(cf_http *h, http_answer_kind kind);
/* A mark for a new server's answers_gen. */
uint64_t http_answers_new_gen(void);
/* Frees every thread's answers; after the daemon stopped (no connection
 * holds one). */
void http_answers_free(cf_http *h);
/* Responses counted for status slot k (counted_status, N_COUNTED = other). */
uint64_t http_responses_counted(cf_http *h, size_t k);
/* A pre-built application/json response of static text, with the headers
 * http_send_response adds when no CORS origin is configured; NULL on OOM. */
struct MHD_Response *http_shared_json(const char *text);
/* Sends malloc'd JSON text (consumed) as application/json. */
enum MHD_Result http_send_json_text(request *rq, struct MHD_Connection *c, unsigned status, char *text, size_t len,
                               const extra_header *extra, size_t n_extra);
enum MHD_Result http_send_error_h(request *rq, struct MHD_Connection *c, unsigned status, const char *msg,
                             const extra_header *extra, size_t n_extra);
enum MHD_Result http_send_error(request *rq, struct MHD_Connection *c, unsigned status, const char *msg);
enum MHD_Result http_send_unavailable(request *rq, struct MHD_Connection *c, const char *msg);
enum MHD_Result http_send_static(request *rq, struct MHD_Connection *c, unsigned status, const char *ctype,
                            const void *data, size_t len, const extra_header *extra, size_t n_extra);

/* ---- http_auth.c: bearer tokens ----------------------------------------- */

bool http_authorized(struct MHD_Connection *c, const char *token);
/* False when the Host header names a host DNS rebinding could have pointed
 * here (docs/API.md "DNS rebinding"); answered with http_send_wrong_host. */
bool http_host_allowed(const cf_http *h, struct MHD_Connection *c);
enum MHD_Result http_send_wrong_host(request *rq, struct MHD_Connection *c);
enum MHD_Result http_send_unauthorized(request *rq, struct MHD_Connection *c, bool had_header);

/* ---- http_conn.c: connections, deadlines, body budget, framing ---------- */

/* Takes n more bytes of the body budget for this request. */
bool http_budget_take(cf_http *h, request *rq, size_t n);
void http_budget_release(cf_http *h, request *rq);
unsigned http_connection_stripe(struct MHD_Connection *c);
void http_head_scan(struct MHD_Connection *c, http_head *out);
bool http_target_clean(const char *uri);
enum MHD_Result http_send_bad_framing(request *rq, struct MHD_Connection *c, const char *msg);
void http_apply_deadline(request *rq, struct MHD_Connection *c, int64_t left_ms);
/* Gives libmicrohttpd the connection's inactivity timeout, unless ce (may be
 * NULL) shows it holds that value already. */
void http_set_timeout(conn_entry *ce, struct MHD_Connection *c, unsigned secs);
/* libmicrohttpd's inactivity timeout of a connection between requests
 * (--connection-timeout in whole seconds, rounded up). */
static inline unsigned http_idle_timeout_s(const cf_http *h)
{
    return (unsigned)((h->cfg.connection_timeout_ms + 999) / 1000);
}
void http_notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);
void *http_reaper_main(void *arg);

/* ---- http_accept.c: the listening socket and its accept thread ---------- */

/* Binds and listens on sa (h->listen_fd). 0 or -errno. */
int http_accept_listen(cf_http *h, const struct sockaddr *sa, socklen_t len);
/* Starts handing accepted connections to h->daemon (MHD_add_connection,
 * which spreads them over the worker threads). 0 or -EAGAIN. */
int http_accept_start(cf_http *h);
/* Stops the thread and closes the socket (accepts a half-started h).
 * Before MHD_stop_daemon. */
void http_accept_stop(cf_http *h);

/* ---- http_park.c: requests waiting for their fsync ----------------------- */

/* With --fsync always a request whose events are logged but not yet
 * durable is parked instead of holding an HTTP thread through the fsync:
 * its connection is suspended (MHD_suspend_connection) and one committer
 * thread runs the group commit for every parked request, then resumes each
 * one whose LSN became durable; MHD calls access_handler again, which sends
 * the answer kept in the request (park_answer). A parked request past its
 * deadline is resumed by the reaper and answered 503 (never a 202 before
 * durability). */
int http_park_start(cf_http *h);
/* Commits and resumes everything parked, refuses new parking (callers then
 * wait inline), joins the committer. Before MHD_stop_daemon. */
void http_park_stop(cf_http *h);
/* Parks rq (called from access_handler, which must then return MHD_YES):
 * true when parked, false when the caller must wait inline (stopping). */
bool http_park_request(cf_http *h, request *rq, struct MHD_Connection *c, int64_t upto);
/* The reaper's check: resumes parked requests past their deadline. */
void http_park_expire(cf_http *h, int64_t now);

/* ---- http_get.c: GET endpoints and the dashboard's files ---------------- */

enum MHD_Result http_handle_get(request *rq, struct MHD_Connection *c);
bool http_asset_exists(const char *url);
enum MHD_Result http_handle_asset(request *rq, struct MHD_Connection *c, const char *url, const char *method);

/* ---- http_post.c: POST endpoints ---------------------------------------- */

enum MHD_Result http_begin_post(request *rq, struct MHD_Connection *c);
enum MHD_Result http_answer_query(request *rq, struct MHD_Connection *c, const char *text, size_t len);
enum MHD_Result http_finish_events(request *rq, struct MHD_Connection *c, char *body, size_t len);
/* A parked POST /api/v1/events resumed: its 202, or the 503 of a failed or
 * late commit. */
enum MHD_Result http_finish_parked(request *rq, struct MHD_Connection *c);
enum MHD_Result http_finish_sql(request *rq, struct MHD_Connection *c, char *body, size_t len);
enum MHD_Result http_finish_query(request *rq, struct MHD_Connection *c, char *body, size_t len);
enum MHD_Result http_finish_compat(request *rq, struct MHD_Connection *c, char *body, size_t len);
enum MHD_Result http_finish_stream_events(request *rq, struct MHD_Connection *c, char *body, size_t len);
enum MHD_Result http_finish_watermark(request *rq, struct MHD_Connection *c, char *body, size_t len);
enum MHD_Result http_finish_table_rows(request *rq, struct MHD_Connection *c, char *body, size_t len);
enum MHD_Result http_handle_table_row(request *rq, struct MHD_Connection *c, bool del);

#endif
