/* http_conn: the connection table of the HTTP server (http_int.h): the
 * reaper and its deadlines, shedding before the table fills, the body
 * budget, and the checks of a request's framing and target. */
#include "http_int.h"
#include "thread_role.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* How often the reaper looks for connections past their deadline. */
#define REAPER_PERIOD_MS 200

/* Takes n more bytes of the body budget for this request. */
bool http_budget_take(cf_http *h, request *rq, size_t n)
{
    if (!cf_body_budget_take(h->budget, rq->stripe, n))
        return false;
    rq->reserved += n;
    return true;
}

void http_budget_release(cf_http *h, request *rq)
{
    if (!rq->reserved)
        return;
    cf_body_budget_give(h->budget, rq->stripe, rq->reserved);
    rq->reserved = 0;
}

unsigned http_connection_stripe(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return cf_body_budget_slot(ci ? ci->client_addr : NULL);
}

/* ---- request hygiene ---------------------------------------------------- */

typedef struct head_walk {
    http_head *out;
    unsigned n_length;          /* Content-Length headers */
    bool lengths_differ;
    bool transfer_encoding;
} head_walk;

/* The first value of each header the POST path reads (first, as
 * MHD_lookup_connection_value answers). */
static void keep_first(const char **slot, const char *value)
{
    if (!*slot)
        *slot = value ? value : "";
}

static enum MHD_Result head_value(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    head_walk *w = cls;
    if (kind != MHD_HEADER_KIND)
        return MHD_YES;   /* a cookie or query argument: counted only */
    /* Most headers are none of these: the first letter decides cheaply. */
    switch (key[0] | 0x20) {
    case 'c':
        if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
            if (w->n_length++ == 0)
                w->out->content_length = value ? value : "";
            else if (strcmp(w->out->content_length, value ? value : "") != 0)
                w->lengths_differ = true;
        } else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE) == 0) {
            keep_first(&w->out->content_type, value);
        }
        break;
    case 't':
        if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
            w->transfer_encoding = true;
        break;
    case 'u':
        if (strcasecmp(key, MHD_HTTP_HEADER_USER_AGENT) == 0)
            keep_first(&w->out->user_agent, value);
        break;
    case 'r':
        if (strcasecmp(key, MHD_HTTP_HEADER_REFERER) == 0)
            keep_first(&w->out->referer, value);
        break;
    default:
        break;
    }
    return MHD_YES;
}

/* The cost is the head's bytes as read (whitespace and all), plus 32 per
 * value libmicrohttpd parsed out of them (header, cookie and query argument
 * each take a record of about that much; measured on 0.9.75: the room left
 * for the answer shrinks by 28 bytes per header).
 *
 * Framing, RFC 9112 6.3: a request with both Transfer-Encoding and
 * Content-Length, or with differing Content-Length values, has no
 * trustworthy end, so a proxy in front of us may see a different request
 * boundary than we do (request smuggling). libmicrohttpd 0.9.75 accepts
 * both; we refuse them and close the connection. O(values). */
void http_head_scan(struct MHD_Connection *c, http_head *out)
{
    memset(out, 0, sizeof *out);
    head_walk w = {out, 0, false, false};
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    int n = MHD_get_connection_values(c, (enum MHD_ValueKind)(MHD_HEADER_KIND | MHD_COOKIE_KIND | MHD_GET_ARGUMENT_KIND),
                                      head_value, &w);
    out->cost = (ci ? ci->header_size : 0) + 32u * (size_t)(n > 0 ? n : 0);
    if (w.transfer_encoding && w.n_length > 0)
        out->framing_error = "a request must not carry both Content-Length and Transfer-Encoding";
    else if (w.lengths_differ)
        out->framing_error = "conflicting Content-Length headers";
}

/* True when the raw request target holds no percent-encoded NUL and no raw
 * control byte. libmicrohttpd decodes %00 into a NUL that silently cuts the
 * decoded path and query values (so "/index.html%00.js" would be served as
 * "/index.html", and a page_url or user_id would match a truncated key);
 * refusing the request is the only answer that cannot be misread. O(n). */
bool http_target_clean(const char *uri)
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
enum MHD_Result http_send_bad_framing(request *rq, struct MHD_Connection *c, const char *msg)
{
    static const extra_header close_hdr[] = {{MHD_HTTP_HEADER_CONNECTION, "close"}};
    return http_send_error_h(rq, c, MHD_HTTP_BAD_REQUEST, msg, close_hdr, 1);
}

/* Caps MHD's inactivity timeout by what is left of the request deadline,
 * so a client that trickles bytes cannot outlive the deadline by much. */
void http_apply_deadline(request *rq, struct MHD_Connection *c, int64_t left_ms)
{
    int64_t t = rq->h->cfg.connection_timeout_ms;
    if (left_ms < t)
        t = left_ms;
    unsigned secs = (unsigned)((t + 999) / 1000);
    if (secs == 0)
        secs = 1;
    http_set_timeout(rq->conn, c, secs);
}

/* Each MHD_set_connection_option(TIMEOUT) takes libmicrohttpd's cleanup
 * mutex and moves the connection between its timeout lists; a request set
 * it twice, to the same value nearly always (the request deadline is
 * longer than the idle timeout), which was 0.1-0.3% of the server under
 * single-event POSTs plus its mutex (issue 15). Setting the value it holds changes
 * nothing: its inactivity clock restarts with every read and write
 * anyway. */
void http_set_timeout(conn_entry *ce, struct MHD_Connection *c, unsigned secs)
{
    if (ce && ce->mhd_timeout_s == secs)
        return;
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, secs);
    if (ce)
        ce->mhd_timeout_s = secs;
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

void http_notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code)
{
    cf_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_entry *e = ci ? calloc(1, sizeof *e) : NULL;
        if (!e)
            return;   /* not watched: MHD's inactivity timeout still applies */
        e->fd = ci->connect_fd;
        e->stripe = http_connection_stripe(c);
        e->mhd_timeout_s = http_idle_timeout_s(h);   /* the daemon's (cf_http_start) */
        int64_t now = http_now_ms();
        atomic_store(&e->since_ms, now);
        atomic_store(&e->phase, PHASE_WAITING);
        /* The request headers must be in within the header timeout (nginx's
         * client_header_timeout): a silent or trickling opener is cut. */
        atomic_store(&e->deadline_ms, now + h->cfg.header_timeout_ms);
        pthread_mutex_lock(&h->reaper_mu);
        if (h->n_handed > 0)
            h->n_handed--;   /* counted by http_accept.c until now */
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
        pthread_cond_signal(&h->accept_cv);   /* a slot for a waiting accept */
        pthread_mutex_unlock(&h->reaper_mu);
        cf_buf_free(&e->spare_body);
        free(e->spare_rq);
        cf_buf_free(&e->spare_enrich);
        free(e);
        *socket_context = NULL;
    }
}

/* Every REAPER_PERIOD_MS: hang up on connections past their deadline.
 * O(connections) per pass. */
void *http_reaper_main(void *arg)
{
    cf_http *h = arg;
    cf_thread_role_name("cf-http-reaper");
    pthread_mutex_lock(&h->reaper_mu);
    while (!h->reaper_stop) {
        int64_t now = http_now_ms();
        for (conn_entry *e = h->conns; e; e = e->next) {
            int64_t d = atomic_load(&e->deadline_ms);
            if (d != 0 && now >= d && !e->cut) {
                cut_locked(h, e);
                atomic_fetch_add_explicit(&h->timed_out, 1, memory_order_relaxed);
            }
        }
        /* Outside reaper_mu: resuming takes libmicrohttpd's own locks,
         * and MHD calls http_notify_connection (which takes reaper_mu) from its
         * threads. */
        pthread_mutex_unlock(&h->reaper_mu);
        http_park_expire(h, now);
        pthread_mutex_lock(&h->reaper_mu);
        if (h->reaper_stop)
            break;
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
