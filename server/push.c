/* push: the WebSocket hub (SPEC section 9) on libwebsockets 4.1.
 *
 * Threads. libwebsockets is single-threaded per context: one service thread
 * of our own runs lws_service() and is the only thread that touches a wsi or
 * calls lws_write(). Publishers (engine threads) never do I/O: under the hub
 * mutex they append one shared, reference-counted copy of the message to the
 * queue of every subscribed client, then wake the service thread with
 * lws_cancel_service(). The service thread answers
 * LWS_CALLBACK_EVENT_WAIT_CANCELLED by asking for a writeable callback on
 * every client with queued messages, and makes one lws_write per
 * LWS_CALLBACK_SERVER_WRITEABLE, as libwebsockets requires: of every
 * message the client has queued, up to CF_PUSH_BATCH_BYTES, framed here
 * back to back (one send per client per burst of results, not one per
 * message).
 *
 * Slow clients. A client queue holds at most cfg->ws_queue messages and
 * cfg->ws_queue_bytes payload bytes; when it is full, interim updates are
 * dropped first (push_queue.h has the exact policy) and counted in
 * cf_push_dropped(). Beyond the queue, a client that does not read pins at
 * most one more write (one message, or queued messages sent together; no
 * larger than the queue bound either way): the part lws could not send
 * yet. A client that stops reading only fills its own kernel buffer and its
 * own queue, so publishing stays O(clients) with no waiting, and other
 * clients are served as before.
 *
 * Handshake checks (LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION, headers read
 * with lws_hdr_copy):
 *   - Sec-WebSocket-Version must be 13 (RFC 6455 4.2.1; libwebsockets
 *     4.1.6 itself accepts any value).
 *   - Origin (cross-site WebSocket hijacking, DNS rebinding): a request
 *     without Origin (non-browser clients) is allowed; a browser's Origin is
 *     allowed when it is this server's own page by a name that cannot be
 *     rebound (own_origin(): localhost, the --bind address, or an IP literal
 *     equal to the Host header's), when it equals one of cfg->cors_origins
 *     (scheme://host[:port], case-insensitive), or when cfg->cors_origins
 *     holds "*". Anything else is refused.
 *   - cfg->read_token, when set: "?token=<t>" in the URL (browsers cannot set
 *     headers on a WebSocket) or "Authorization: Bearer <t>".
 *   - at most cfg->ws_max_clients connected clients.
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE is deliberately not handled: this
 * libwebsockets version has a use-after-free behind its `in` pointer there.
 *
 * Client messages: {"subscribe": ["windows", "trending", "sessions", "stats",
 * "late"]} replaces the client's topics (default: all). Unknown topic names
 * are ignored (forward compatible); the server confirms with
 * {"type": "subscribed", "data": [topics in force]}. A text message that is
 * not JSON, or whose "subscribe" is not an array of strings, closes the
 * connection with 1008 (policy violation); binary frames close it with 1003;
 * messages over CF_PUSH_MAX_RX bytes with 1009. JSON objects without
 * "subscribe" are ignored. */
#include "push.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libwebsockets.h>

#include "clock.h"
#include "host_name.h"
#include "log.h"
#include "push_queue.h"
#include "thread_role.h"

/* Largest client message we accept (a subscribe list is tiny). */
#define CF_PUSH_MAX_RX 4096
/* Largest message we publish: lws_write takes an int length. */
#define CF_PUSH_MAX_MSG ((size_t)INT_MAX / 2)
/* One write to a client carries at most this many queued messages and
 * (when it carries more than one) this many bytes of frames, or the queue's
 * byte bound when that is smaller: the part of a write lws must copy when
 * the client's socket is full stays within the bound a slow client had. */
#define CF_PUSH_BATCH_MAX 64
#define CF_PUSH_BATCH_BYTES ((size_t)256 << 10)

static const char *const topic_names[CF_TOPIC_COUNT] = {
    [CF_TOPIC_WINDOWS] = "windows",
    [CF_TOPIC_TRENDING] = "trending",
    [CF_TOPIC_SESSIONS] = "sessions",
    [CF_TOPIC_STATS] = "stats",
    [CF_TOPIC_LATE] = "late",
};
#define ALL_TOPICS ((1u << CF_TOPIC_COUNT) - 1u)

/* Per-connection state, allocated and zeroed by libwebsockets
 * (per_session_data_size). Fields marked (mu) are guarded by the hub mutex;
 * the rest belong to the service thread. */
typedef struct client {
    struct lws *wsi;
    cf_push_queue *q;           /* (mu) */
    unsigned topics;            /* (mu) bit per cf_topic */
    char *named;                /* (mu) named topics ("view:NAME"), NUL-separated */
    size_t named_len;
    struct client *prev, *next; /* (mu) hub list */
    bool linked;
    int close_code;             /* nonzero: close with it at the next writeable */
    size_t rx_len;
    bool rx_overflow;
    char rx[CF_PUSH_MAX_RX + 1];
} client;

struct cf_push {
    struct lws_context *ctx;
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;

    pthread_mutex_t mu;
    client *clients;            /* (mu) */
    bool closing;               /* (mu) set by cf_push_stop: publishing ends */

    atomic_size_t n_clients;
    atomic_uint_fast64_t dropped;
    atomic_uint_fast64_t sent;

    size_t queue_cap;
    size_t queue_bytes;
    size_t batch_bytes;         /* min(CF_PUSH_BATCH_BYTES, queue_bytes) */
    unsigned char *wbuf;        /* batch_bytes: a coalesced write (service thread) */
    uint64_t fd_ceiling;        /* cf_config_fd_ceiling() */
    size_t max_clients;
    char read_token[sizeof ((cf_config *)0)->read_token];
    char origins[CF_MAX_ORIGINS][sizeof ((cf_config *)0)->cors_origins[0]];
    size_t n_origins;
    bool any_origin;
    int64_t last_refusal_log_ms;    /* service thread only */
    uint64_t refusals_unlogged;

    /* Must outlive the context: libwebsockets keeps pointers to them. */
    struct lws_protocols protocols[2];
    lws_retry_bo_t retry;
    char iface[sizeof ((cf_config *)0)->bind];
};

/* ---- handshake checks ---------------------------------------------------- */

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
static bool own_origin(const cf_push *p, const char *origin, const char *host)
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

static bool origin_allowed(const cf_push *p, const char *origin, const char *host)
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

static bool token_ok(const cf_push *p, struct lws *wsi)
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

/* Logs a refused handshake, at most once a second (refusals are cheap for a
 * client to cause, the log must not be). Service thread only. */
static void log_refusal(cf_push *p, const char *why, const char *detail)
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

/* Decides whether a WebSocket handshake may proceed (see the file comment). */
static bool admit(cf_push *p, struct lws *wsi)
{
    char origin[512], host[512];
    if (atomic_load(&p->stopping))
        return false;
    if (atomic_load(&p->n_clients) >= p->max_clients) {
        log_refusal(p, "too many clients (--ws-max-clients)", "");
        return false;
    }
    char version[8];
    if (copy_header(wsi, WSI_TOKEN_VERSION, version, (int)sizeof version) < 0 || strcmp(version, "13") != 0) {
        log_refusal(p, "Sec-WebSocket-Version is not 13", "");
        return false;
    }
    if (copy_header(wsi, WSI_TOKEN_ORIGIN, origin, (int)sizeof origin) < 0 ||
        copy_header(wsi, WSI_TOKEN_HOST, host, (int)sizeof host) < 0) {
        log_refusal(p, "oversized Origin or Host header", "");
        return false;
    }
    if (!origin_allowed(p, origin, host)) {
        log_refusal(p, "origin not allowed (see --cors-origin): ", origin);
        return false;
    }
    if (!token_ok(p, wsi)) {
        log_refusal(p, "missing or wrong read token", "");
        return false;
    }
    return true;
}

/* ---- client messages ----------------------------------------------------- */

/* Queues a message for one client from the service thread. */
static void send_to(cf_push *p, client *c, const char *msg, size_t len)
{
    cf_push_msg *m = cf_push_msg_new(msg, len, LWS_PRE, false);
    if (!m)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->dropped, cf_push_queue_offer(c->q, m));
    pthread_mutex_unlock(&p->mu);
    cf_push_msg_unref(m);
    lws_callback_on_writable(c->wsi);
}

/* Handles one complete text message. Returns 0, or a WebSocket close code. */
static int handle_message(cf_push *p, client *c, const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
    if (!root)
        return LWS_CLOSE_STATUS_POLICY_VIOLATION;
    int rc = 0;
    const cJSON *sub = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "subscribe")
                                            : NULL;
    if (!cJSON_IsObject(root)) {
        rc = LWS_CLOSE_STATUS_POLICY_VIOLATION;
    } else if (sub) {
        if (!cJSON_IsArray(sub)) {
            rc = LWS_CLOSE_STATUS_POLICY_VIOLATION;
            goto out;
        }
        unsigned topics = 0;
        const cJSON *it;
        /* Named topics of continuous SQL: view:NAME and stream:NAME (a
         * name need not exist yet: it may be created later). */
        char *named = NULL;
        size_t named_len = 0, n_named = 0;
        cJSON_ArrayForEach(it, sub) {
            if (!cJSON_IsString(it)) {
                free(named);
                rc = LWS_CLOSE_STATUS_POLICY_VIOLATION;
                goto out;
            }
            size_t il = strlen(it->valuestring);
            bool is_named = (strncmp(it->valuestring, "view:", 5) == 0 && il > 5) ||
                            (strncmp(it->valuestring, "stream:", 7) == 0 && il > 7);
            if (is_named && il <= CF_PUSH_MAX_TOPIC && n_named < CF_PUSH_MAX_NAMED) {
                char *g = realloc(named, named_len + il + 1);
                if (!g) {
                    free(named);
                    rc = LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
                    goto out;
                }
                named = g;
                memcpy(named + named_len, it->valuestring, il + 1);
                named_len += il + 1;
                n_named++;
            }
            for (unsigned t = 0; t < CF_TOPIC_COUNT; t++)
                if (strcmp(it->valuestring, topic_names[t]) == 0)
                    topics |= 1u << t;
            if (strcmp(it->valuestring, "session_end") == 0)
                topics |= 1u << CF_TOPIC_SESSIONS;
        }
        pthread_mutex_lock(&p->mu);
        c->topics = topics;
        char *old = c->named;
        c->named = named;
        c->named_len = named_len;
        pthread_mutex_unlock(&p->mu);
        free(old);

        cJSON *ack = cJSON_CreateObject();
        cJSON_AddStringToObject(ack, "type", "subscribed");
        cJSON *data = cJSON_AddArrayToObject(ack, "data");
        for (unsigned t = 0; data && t < CF_TOPIC_COUNT; t++)
            if (topics & (1u << t))
                cJSON_AddItemToArray(data, cJSON_CreateString(topic_names[t]));
        for (size_t at = 0; data && at < named_len; at += strlen(named + at) + 1)
            cJSON_AddItemToArray(data, cJSON_CreateString(named + at));
        char *ack_text = data ? cJSON_PrintUnformatted(ack) : NULL;
        cJSON_Delete(ack);
        if (ack_text) {
            send_to(p, c, ack_text, strlen(ack_text));
            cJSON_free(ack_text);
        }
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* Collects a (possibly fragmented) client message; handles it once complete. */
static int on_receive(cf_push *p, client *c, struct lws *wsi, const void *in, size_t len)
{
    if (c->close_code)
        return 0;   /* closing: ignore the rest */
    if (lws_frame_is_binary(wsi)) {
        c->close_code = LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE;
        return 0;
    }
    if (lws_is_first_fragment(wsi)) {
        c->rx_len = 0;
        c->rx_overflow = false;
    }
    if (c->rx_overflow || len > CF_PUSH_MAX_RX - c->rx_len) {
        c->rx_overflow = true;
    } else {
        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += len;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    if (c->rx_overflow) {
        c->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
        return 0;
    }
    c->rx[c->rx_len] = '\0';
    c->close_code = handle_message(p, c, c->rx, c->rx_len);
    c->rx_len = 0;
    return 0;
}

/* ---- the protocol callback ----------------------------------------------- */

static void link_client(cf_push *p, client *c)
{
    pthread_mutex_lock(&p->mu);
    c->prev = NULL;
    c->next = p->clients;
    if (p->clients)
        p->clients->prev = c;
    p->clients = c;
    c->linked = true;
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->n_clients, 1);
}

static void unlink_client(cf_push *p, client *c)
{
    if (!c->linked)
        return;
    pthread_mutex_lock(&p->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->linked = false;
    cf_push_queue *q = c->q;
    c->q = NULL;
    free(c->named);
    c->named = NULL;
    c->named_len = 0;
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_sub(&p->n_clients, 1);
    cf_push_queue_free(q);
}

/* Writes what c has queued: one lws_write per callback, as libwebsockets
 * requires, but of every queued message that fits in p->batch_bytes (see
 * cf_push_queue_pop_batch), as back-to-back frames. */
static int on_writeable(cf_push *p, client *c, struct lws *wsi)
{
    if (c->close_code) {
        static const char why[] = "bad client message";
        lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)why,
                         sizeof why - 1);
        return -1;
    }
    cf_push_msg *ms[CF_PUSH_BATCH_MAX];
    pthread_mutex_lock(&p->mu);
    size_t n_msgs = c->q ? cf_push_queue_pop_batch(c->q, ms, CF_PUSH_BATCH_MAX, p->batch_bytes) : 0;
    bool more = c->q && cf_push_queue_len(c->q) > 0;
    pthread_mutex_unlock(&p->mu);
    if (n_msgs == 0)
        return 0;
    int n;
    size_t len;
    if (n_msgs == 1) {
        /* lws writes the frame header into the LWS_PRE bytes before the
         * payload; the message is shared, but only this thread writes, one
         * at a time. */
        len = ms[0]->len;
        n = lws_write(wsi, cf_push_msg_payload(ms[0]), len, LWS_WRITE_TEXT);
    } else {
        /* Several: framed here into the hub's write buffer (service thread
         * only) and written raw, whole frames only, so lws's own control
         * frames can never land inside one of ours. */
        len = 0;
        for (size_t i = 0; i < n_msgs; i++) {
            len += cf_push_frame_header(p->wbuf + len, ms[i]->len);
            memcpy(p->wbuf + len, cf_push_msg_payload(ms[i]), ms[i]->len);
            len += ms[i]->len;
        }
        n = lws_write(wsi, p->wbuf, len, LWS_WRITE_RAW);
    }
    /* A partial send is buffered inside lws (a copy of the rest, at most
     * max(batch_bytes, one message) bytes), which then holds back the next
     * writeable callback until it is flushed. */
    for (size_t i = 0; i < n_msgs; i++)
        cf_push_msg_unref(ms[i]);
    if (n < 0 || (size_t)n < len)
        return -1;
    atomic_fetch_add(&p->sent, n_msgs);
    if (more)
        lws_callback_on_writable(wsi);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    cf_push *p = lws_context_user(lws_get_context(wsi));
    client *c = user;

    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* Just accepted (user is not our client state here). Sockets that
         * have not finished their handshake are not counted against
         * --ws-max-clients, so a flood of them could take every descriptor:
         * refuse any that would eat into the reserve for the log. */
        if ((uint64_t)(intptr_t)in >= p->fd_ceiling) {
            log_refusal(p, "no descriptors to spare (open-file limit)", "");
            return 1;
        }
        return 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* Do not read `in` here (use-after-free in libwebsockets 4.1.6 on an
         * invalid Upgrade header); the checks happen in FILTER below. */
        return 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return admit(p, wsi) ? 0 : 1;

    case LWS_CALLBACK_ESTABLISHED:
        memset(c, 0, sizeof *c);
        c->wsi = wsi;
        c->topics = ALL_TOPICS;
        c->q = cf_push_queue_new(p->queue_cap, p->queue_bytes);
        if (!c->q)
            return -1;
        link_client(p, c);
        return 0;

    case LWS_CALLBACK_CLOSED:
        unlink_client(p, c);
        return 0;

    case LWS_CALLBACK_RECEIVE:
        on_receive(p, c, wsi, in, len);
        if (c->close_code)
            lws_callback_on_writable(wsi);
        return 0;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return on_writeable(p, c, wsi);

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Publishers queued messages: ask for writeable callbacks. This
         * never calls back into us synchronously, so holding mu is fine. */
        pthread_mutex_lock(&p->mu);
        for (client *it = p->clients; it; it = it->next)
            if (cf_push_queue_len(it->q) > 0)
                lws_callback_on_writable(it->wsi);
        pthread_mutex_unlock(&p->mu);
        return 0;

    case LWS_CALLBACK_HTTP:
        /* A plain HTTP request on the WebSocket port. */
        if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "WebSocket endpoint"))
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;

    default:
        return 0;
    }
}

/* ---- lifecycle ----------------------------------------------------------- */

static void lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    /* lws prefixes its own timestamp and level: keep the message only. */
    const char *msg = line;
    const char *colon = strstr(line, ": ");
    if (line[0] == '[' && colon && (size_t)(colon - line) < 48)
        msg = colon + 2;
    n -= (size_t)(msg - line);
    cf_log(level & LLL_ERR ? CF_LOG_ERROR : CF_LOG_WARN, "libwebsockets: %.*s", (int)n, msg);
}

static void *service_main(void *arg)
{
    cf_push *p = arg;
    /* A request thread, not a throughput one: it answers subscriptions and
     * pushes the live results, which a client waits for. At nice 10 under
     * load, a subscribe was taken late and its first pushes missed. */
    cf_thread_role_name("cf-push");
    while (!atomic_load(&p->stopping))
        if (lws_service(p->ctx, 0) < 0)
            break;
    return NULL;
}

static bool is_wildcard_bind(const char *b)
{
    return b[0] == '\0' || strcmp(b, "0.0.0.0") == 0 || strcmp(b, "::") == 0 ||
           strcmp(b, "*") == 0;
}

/* Tries to bind bind_addr:port ourselves first. This gives a precise
 * message, and avoids a small leak in lws_create_context()'s own bind
 * failure path. Returns NULL when the address can be bound, else a message. */
static const char *probe_listen(const char *bind_addr, uint16_t port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port_s[8];
    snprintf(port_s, sizeof port_s, "%u", (unsigned)port);
    if (getaddrinfo(is_wildcard_bind(bind_addr) ? NULL : bind_addr, port_s, &hints, &res) != 0 ||
        !res)
        return "cannot resolve the --bind address for WebSocket clients";
    const char *err = NULL;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        err = "cannot create a socket for WebSocket clients";
    } else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
               bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        err = errno == EADDRINUSE ? "the WebSocket port (--ws-port) is already in use"
                                  : "cannot listen on the --bind address for WebSocket clients";
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return err;
}

cf_push *cf_push_start(const cf_config *cfg, const char **ret_err)
{
    const char *probe = probe_listen(cfg->bind, cfg->ws_port);
    if (probe) {
        *ret_err = probe;
        return NULL;
    }
    cf_push *p = calloc(1, sizeof *p);
    if (!p) {
        *ret_err = "out of memory";
        return NULL;
    }
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        *ret_err = "cannot create a mutex";
        return NULL;
    }
    p->queue_cap = cfg->ws_queue ? cfg->ws_queue : 1;
    /* A zeroed cf_config (unit tests build their own) means the default,
     * never "no byte bound". */
    p->queue_bytes = cfg->ws_queue_bytes ? cfg->ws_queue_bytes : CF_WS_QUEUE_BYTES_DEFAULT;
    p->batch_bytes = p->queue_bytes < CF_PUSH_BATCH_BYTES ? p->queue_bytes : CF_PUSH_BATCH_BYTES;
    p->wbuf = malloc(p->batch_bytes);
    if (!p->wbuf) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        *ret_err = "out of memory";
        return NULL;
    }
    p->fd_ceiling = cf_config_fd_ceiling(cfg, CF_FD_KEEP_WS);
    p->max_clients = cfg->ws_max_clients;
    snprintf(p->read_token, sizeof p->read_token, "%s", cfg->read_token);
    for (size_t i = 0; i < cfg->n_cors_origins && i < CF_MAX_ORIGINS; i++) {
        if (strcmp(cfg->cors_origins[i], "*") == 0)
            p->any_origin = true;
        snprintf(p->origins[p->n_origins++], sizeof p->origins[0], "%s", cfg->cors_origins[i]);
    }
    snprintf(p->iface, sizeof p->iface, "%s", cfg->bind);

    p->protocols[0] = (struct lws_protocols){
        .name = "clickflow",
        .callback = callback,
        .per_session_data_size = sizeof(client),
        .rx_buffer_size = CF_PUSH_MAX_RX,
        /* Left 0, lws would cap each send() at rx_buffer_size + LWS_PRE + 4
         * (4116 bytes), copy the rest of every larger write into its own
         * buffer and send it in more such pieces, one poll round each: three
         * sends per 12 KB message, most of the push thread's cost. */
        .tx_packet_size = CF_PUSH_BATCH_BYTES,
    };
    /* Ping an idle client after 30 s of silence, hang up after 60 s. */
    p->retry = (lws_retry_bo_t){.secs_since_valid_ping = 30, .secs_since_valid_hangup = 60};

    /* Errors only: its warnings repeat what we log (refused handshakes). */
    lws_set_log_level(LLL_ERR, lws_log);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = cfg->ws_port;
    info.iface = is_wildcard_bind(p->iface) ? NULL : p->iface;
    info.protocols = p->protocols;
    info.user = p;
    info.gid = -1;
    info.uid = -1;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (strchr(p->iface, ':') == NULL && !is_wildcard_bind(p->iface))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.retry_and_idle_policy = &p->retry;
    info.timeout_secs = 10;

    p->ctx = lws_create_context(&info);
    if (!p->ctx) {
        *ret_err = "cannot listen for WebSocket clients (address in use or bad --bind?)";
        goto fail;
    }
    if (pthread_create(&p->thread, NULL, service_main, p) != 0) {
        *ret_err = "cannot start the WebSocket thread";
        goto fail;
    }
    p->thread_started = true;
    return p;
fail:
    cf_push_stop(p);
    return NULL;
}

void cf_push_stop(cf_push *p)
{
    if (!p)
        return;
    atomic_store(&p->stopping, true);
    /* After this no publisher touches the context (see cf_push_publish). */
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    pthread_mutex_unlock(&p->mu);
    if (p->thread_started) {
        lws_cancel_service(p->ctx);
        pthread_join(p->thread, NULL);
    }
    /* Destroying the context closes every connection (LWS_CALLBACK_CLOSED
     * unlinks and frees each client's queue) on this thread, now that the
     * service thread is gone. */
    if (p->ctx)
        lws_context_destroy(p->ctx);
    pthread_mutex_destroy(&p->mu);
    free(p->wbuf);
    free(p);
}

static bool has_named(const client *c, const char *topic)
{
    for (size_t at = 0; at < c->named_len; at += strlen(c->named + at) + 1)
        if (strcmp(c->named + at, topic) == 0)
            return true;
    return false;
}

/* Whom one message goes to: the clients subscribed to a built-in topic
 * (topic_bit) or to a named one (named). */
typedef struct audience {
    unsigned topic_bit;
    const char *named;
} audience;

static bool listens(const client *c, const audience *to)
{
    if (to->named)
        return c->named && has_named(c, to->named);
    return (c->topics & to->topic_bit) != 0;
}

/* One copy of msg, referenced by every listening client's queue. A message
 * nobody can take (too big, no memory) counts as dropped. */
static void fan_out(cf_push *p, const audience *to, const char *msg, size_t len, bool interim)
{
    if (len > CF_PUSH_MAX_MSG) {
        atomic_fetch_add(&p->dropped, 1);
        return;
    }
    cf_push_msg *m = cf_push_msg_new(msg, len, LWS_PRE, interim);
    if (!m) {
        atomic_fetch_add(&p->dropped, 1);
        return;
    }
    size_t queued = 0, dropped = 0;
    pthread_mutex_lock(&p->mu);
    if (!p->closing) {
        for (client *c = p->clients; c; c = c->next) {
            if (!listens(c, to))
                continue;
            dropped += cf_push_queue_offer(c->q, m);
            queued++;
        }
        /* Under mu, so cf_push_stop() cannot destroy the context meanwhile;
         * it only writes a byte to lws's wake-up pipe. */
        if (queued)
            lws_cancel_service(p->ctx);
    }
    pthread_mutex_unlock(&p->mu);
    cf_push_msg_unref(m);
    if (dropped)
        atomic_fetch_add(&p->dropped, dropped);
}

void cf_push_publish(cf_push *p, cf_topic topic, const char *msg, size_t len, bool interim)
{
    if (!p || (unsigned)topic >= CF_TOPIC_COUNT || !msg || atomic_load(&p->stopping))
        return;
    if (atomic_load(&p->n_clients) == 0)
        return;     /* nobody listens: not even a copy */
    fan_out(p, &(audience){ .topic_bit = 1u << topic }, msg, len, interim);
}

void cf_push_publish_named(cf_push *p, const char *topic, const char *msg, size_t len, bool interim)
{
    if (!p || !topic || !msg || atomic_load(&p->stopping) || atomic_load(&p->n_clients) == 0)
        return;
    fan_out(p, &(audience){ .named = topic }, msg, len, interim);
}

size_t cf_push_clients(const cf_push *p)
{
    return p ? atomic_load(&((cf_push *)p)->n_clients) : 0;
}

uint64_t cf_push_dropped(const cf_push *p)
{
    return p ? atomic_load(&((cf_push *)p)->dropped) : 0;
}

uint64_t cf_push_sent(const cf_push *p)
{
    return p ? atomic_load(&((cf_push *)p)->sent) : 0;
}
