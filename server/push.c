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
 * cf_push_dropped(); a queue that dropped the latest state message of a
 * topic (cf_push_item.state) says so, and the ticker sends that state again
 * to it alone (cf_push_item.repair). Beyond the queue, a client that does not read pins at
 * most one more write (one message, or queued messages sent together; no
 * larger than the queue bound either way): the part lws could not send
 * yet. A client that stops reading only fills its own kernel buffer and its
 * own queue, so publishing stays O(clients) with no waiting, and other
 * clients are served as before.
 *
 * Handshake checks (push_admit.h): version, Origin, read token, client
 * bound, at LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION.
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE is deliberately not handled: this
 * libwebsockets version has a use-after-free behind its `in` pointer there.
 *
 * Clients (push_client.h): their subscriptions, queues and messages, from
 * connect to close. */
#include "push.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "log.h"
#include "push_admit.h"
#include "push_client.h"
#include "push_queue.h"
#include "thread_role.h"

/* Largest message we publish: lws_write takes an int length. */
#define CF_PUSH_MAX_MSG ((size_t)INT_MAX / 2)
/* One write to a client carries at most this many queued messages and
 * (when it carries more than one) this many bytes of frames, or the queue's
 * byte bound when that is smaller: the part of a write lws must copy when
 * the client's socket is full stays within the bound a slow client had. */
#define CF_PUSH_BATCH_MAX 64
#define CF_PUSH_BATCH_BYTES ((size_t)256 << 10)

struct cf_push {
    struct lws_context *ctx;
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;

    pthread_mutex_t mu;
    cf_push_client *clients;    /* (mu) */
    bool closing;               /* (mu) set by cf_push_stop: publishing ends */

    atomic_size_t n_clients;
    /* Clients per built-in topic and clients naming any topic, recounted
     * under mu whenever a client comes, goes or subscribes: publishers ask
     * before they render (cf_push_listened). */
    atomic_size_t listeners[CF_TOPIC_COUNT];
    atomic_size_t named_listeners;
    atomic_uint_fast64_t dropped;
    atomic_uint_fast64_t sent;
    atomic_uint_fast64_t writes;        /* lws_write calls of messages */
    atomic_uint_fast64_t wakes;         /* publishers' wake-ups of the service thread */
    atomic_uint_fast64_t joins;         /* clients connected or subscribed anew */

    size_t queue_cap;
    size_t queue_bytes;
    size_t batch_bytes;         /* min(CF_PUSH_BATCH_BYTES, queue_bytes) */
    unsigned char *wbuf;        /* batch_bytes: a coalesced write (service thread) */
    uint64_t fd_ceiling;        /* cf_config_fd_ceiling() */
    cf_push_admit *admit;       /* handshake checks (service thread) */

    /* Must outlive the context: libwebsockets keeps pointers to them. */
    struct lws_protocols protocols[2];
    lws_retry_bo_t retry;
    char iface[sizeof ((cf_config *)0)->bind];
};

/* Recounts the listeners of every topic. Caller holds mu; O(clients), on
 * connect, subscribe and close only. */
static void recount_locked(cf_push *p)
{
    size_t n[CF_TOPIC_COUNT] = {0}, named = 0;
    for (cf_push_client *c = p->clients; c; c = cf_push_client_next(c)) {
        unsigned t = cf_push_client_topics(c);
        for (unsigned i = 0; i < CF_TOPIC_COUNT; i++)
            n[i] += (t >> i) & 1u;
        named += cf_push_client_names_any(c);
    }
    for (unsigned i = 0; i < CF_TOPIC_COUNT; i++)
        atomic_store(&p->listeners[i], n[i]);
    atomic_store(&p->named_listeners, named);
}

/* A client came: listed, counted, and a join for the ticker. */
static void client_joined(cf_push *p, cf_push_client *c)
{
    pthread_mutex_lock(&p->mu);
    cf_push_client_link(&p->clients, c);
    recount_locked(p);
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->n_clients, 1);
    atomic_fetch_add(&p->joins, 1);
}

/* A client replaced its topics. */
static void client_subscribed(cf_push *p)
{
    pthread_mutex_lock(&p->mu);
    recount_locked(p);
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->joins, 1);
}

/* A client went: off the list (no publisher sees it after mu), then freed
 * with what it still had queued. */
static void client_left(cf_push *p, cf_push_client *c)
{
    pthread_mutex_lock(&p->mu);
    cf_push_client_unlink(&p->clients, c);
    recount_locked(p);
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_sub(&p->n_clients, 1);
    cf_push_client_free(c);
}

/* ---- the protocol callback ----------------------------------------------- */

/* Writes what c has queued: one lws_write per callback, as libwebsockets
 * requires, but of every queued message that fits in p->batch_bytes (see
 * cf_push_queue_pop_batch), as back-to-back frames. */
static int on_writeable(cf_push *p, cf_push_client *c, struct lws *wsi)
{
    int close_code = cf_push_client_close_code(c);
    if (close_code) {
        static const char why[] = "bad client message";
        lws_close_reason(wsi, (enum lws_close_status)close_code, (unsigned char *)why,
                         sizeof why - 1);
        return -1;
    }
    cf_push_msg *ms[CF_PUSH_BATCH_MAX];
    bool more;
    pthread_mutex_lock(&p->mu);
    size_t n_msgs = cf_push_client_take(c, ms, CF_PUSH_BATCH_MAX, p->batch_bytes, &more);
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
    atomic_fetch_add(&p->writes, 1);
    if (more)
        lws_callback_on_writable(wsi);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    cf_push *p = lws_context_user(lws_get_context(wsi));
    /* Our per-connection data is a pointer to the client (NULL until
     * ESTABLISHED), read only in the cases of an established connection:
     * elsewhere user may be no data of ours. */
    cf_push_client **slot = user;
    cf_push_client *c = NULL;

    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* Just accepted (user is not our client state here). Sockets that
         * have not finished their handshake are not counted against
         * --ws-max-clients, so a flood of them could take every descriptor:
         * refuse any that would eat into the reserve for the log. */
        if ((uint64_t)(intptr_t)in >= p->fd_ceiling) {
            cf_push_admit_refused(p->admit, "no descriptors to spare (open-file limit)", "");
            return 1;
        }
        return 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* Do not read `in` here (use-after-free in libwebsockets 4.1.6 on an
         * invalid Upgrade header); the checks happen in FILTER below. */
        return 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return !atomic_load(&p->stopping) &&
                       cf_push_admit_check(p->admit, wsi, atomic_load(&p->n_clients))
                   ? 0
                   : 1;

    case LWS_CALLBACK_ESTABLISHED:
        c = cf_push_client_new(wsi, &p->mu, p->queue_cap, p->queue_bytes, LWS_PRE);
        if (!c)
            return -1;
        *slot = c;
        client_joined(p, c);
        return 0;

    case LWS_CALLBACK_CLOSED:
        c = slot ? *slot : NULL;
        if (c)
            client_left(p, c);
        *slot = NULL;
        return 0;

    case LWS_CALLBACK_RECEIVE: {
        c = slot ? *slot : NULL;
        if (!c)
            return 0;
        cf_push_rx rx = cf_push_client_receive(
            c, in, len, lws_is_first_fragment(wsi),
            lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0,
            lws_frame_is_binary(wsi));
        if (rx.dropped)
            atomic_fetch_add(&p->dropped, rx.dropped);
        if (rx.subscribed)
            client_subscribed(p);
        if (rx.close_code || rx.queued)
            lws_callback_on_writable(wsi);
        return 0;
    }

    case LWS_CALLBACK_SERVER_WRITEABLE:
        c = slot ? *slot : NULL;
        return c ? on_writeable(p, c, wsi) : 0;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Publishers queued messages: ask for writeable callbacks. This
         * never calls back into us synchronously, so holding mu is fine. */
        pthread_mutex_lock(&p->mu);
        for (cf_push_client *it = p->clients; it; it = cf_push_client_next(it))
            if (cf_push_client_queued(it) > 0)
                lws_callback_on_writable(cf_push_client_conn(it));
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
    p->admit = cf_push_admit_new(cfg);
    if (!p->admit) {
        free(p->wbuf);
        pthread_mutex_destroy(&p->mu);
        free(p);
        *ret_err = "out of memory";
        return NULL;
    }
    snprintf(p->iface, sizeof p->iface, "%s", cfg->bind);

    p->protocols[0] = (struct lws_protocols){
        .name = "clickflow",
        .callback = callback,
        .per_session_data_size = sizeof(cf_push_client *),
        .rx_buffer_size = CF_PUSH_CLIENT_MAX_RX,
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
    cf_thread_role_name_thread(p->thread, "cf-push");
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
    cf_push_admit_free(p->admit);
    free(p);
}

/* Queues items[i] for every client listening to to[i], one shared copy of
 * each message (a message nobody can take, too big or no memory, counts as
 * dropped), then wakes the service thread once for all of them: a client
 * gets what one call queued for it in one write. n <= CF_PUSH_GROUP_MAX.
 * O(n * clients). */
static void fan_out(cf_push *p, const cf_push_audience *to, const cf_push_item *items, size_t n)
{
    cf_push_msg *ms[CF_PUSH_GROUP_MAX];
    size_t queued = 0, dropped = 0;
    for (size_t i = 0; i < n; i++) {
        ms[i] = items[i].len > CF_PUSH_MAX_MSG
                    ? NULL
                    : cf_push_msg_new(items[i].msg, items[i].len, LWS_PRE, items[i].interim);
        dropped += ms[i] == NULL;
        if (ms[i] && items[i].state && !to[i].named)
            ms[i]->state = 1u << to[i].topic;
    }
    pthread_mutex_lock(&p->mu);
    if (!p->closing) {
        for (size_t i = 0; i < n; i++) {
            for (cf_push_client *c = p->clients; ms[i] && c; c = cf_push_client_next(c)) {
                if (!cf_push_client_listens(c, &to[i]))
                    continue;
                dropped += cf_push_client_offer(c, ms[i]);
                queued++;
            }
        }
        /* Under mu, so cf_push_stop() cannot destroy the context meanwhile;
         * it only writes a byte to lws's wake-up pipe. */
        if (queued) {
            lws_cancel_service(p->ctx);
            atomic_fetch_add(&p->wakes, 1);
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        cf_push_msg_unref(ms[i]);
    if (dropped)
        atomic_fetch_add(&p->dropped, dropped);
}

void cf_push_publish(cf_push *p, cf_topic topic, const char *msg, size_t len, bool interim)
{
    cf_push_publish_group(p, &(cf_push_item){.topic = topic, .msg = msg, .len = len,
                                             .interim = interim}, 1);
}

void cf_push_publish_group(cf_push *p, const cf_push_item *items, size_t n)
{
    if (!p || !items || atomic_load(&p->stopping))
        return;
    if (atomic_load(&p->n_clients) == 0)
        return;     /* nobody listens: not even a copy */
    while (n > 0) {
        cf_push_audience to[CF_PUSH_GROUP_MAX];
        size_t k = 0;
        for (; k < n && k < CF_PUSH_GROUP_MAX; k++) {
            if ((unsigned)items[k].topic >= CF_TOPIC_COUNT || !items[k].msg)
                return;     /* a caller's bug: publish nothing more */
            to[k] = (cf_push_audience){.topic = items[k].topic, .repair = items[k].repair};
        }
        fan_out(p, to, items, k);
        items += k;
        n -= k;
    }
}

void cf_push_publish_named(cf_push *p, const char *topic, const char *msg, size_t len, bool interim)
{
    if (!p || !topic || !msg || atomic_load(&p->stopping) || atomic_load(&p->n_clients) == 0)
        return;
    fan_out(p, &(cf_push_audience){.named = topic},
            &(cf_push_item){.msg = msg, .len = len, .interim = interim}, 1);
}

uint64_t cf_push_writes(const cf_push *p)
{
    return p ? atomic_load(&((cf_push *)p)->writes) : 0;
}

bool cf_push_listened(const cf_push *p, cf_topic topic)
{
    return p && (unsigned)topic < CF_TOPIC_COUNT &&
           atomic_load(&((cf_push *)p)->listeners[topic]) > 0;
}

bool cf_push_listened_named(const cf_push *p)
{
    return p && atomic_load(&((cf_push *)p)->named_listeners) > 0;
}

uint64_t cf_push_joins(const cf_push *p)
{
    return p ? atomic_load(&((cf_push *)p)->joins) : 0;
}

uint64_t cf_push_wakes(const cf_push *p)
{
    return p ? atomic_load(&((cf_push *)p)->wakes) : 0;
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
