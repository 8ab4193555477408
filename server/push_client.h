/* push_client: one WebSocket client of the push hub (push.c) from connect
 * to close: its subscriptions, its bounded queue (push_queue.h), its place
 * in the hub's list, and its own messages ({"subscribe": [...]}, SPEC 9).
 * push.c keeps the service thread, the handshake and the fan-out.
 *
 * Client messages: {"subscribe": ["windows", "trending", "sessions", "stats",
 * "late", "view:NAME", "stream:NAME"]} replaces the client's topics
 * (default: every built-in topic, no named one). Unknown names are ignored
 * (forward compatible); the client is answered with {"type": "subscribed",
 * "data": [topics in force]}. A text message that is not a JSON object, or
 * whose "subscribe" is not an array of strings, closes the connection with
 * 1008 (policy violation); binary frames close it with 1003; messages over
 * CF_PUSH_CLIENT_MAX_RX bytes with 1009. Objects without "subscribe" are
 * ignored.
 *
 * Locking. The subscriptions, the queue and the list links are read by the
 * publishers and guarded by the hub mutex given to cf_push_client_new():
 * calls marked (mu) need it held; cf_push_client_receive() takes it itself
 * to change them. The receive state and the close code belong to the
 * service thread. */
#ifndef CF_PUSH_CLIENT_H
#define CF_PUSH_CLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "push.h"
#include "push_queue.h"

/* Largest client message accepted (a subscribe list is small). */
#define CF_PUSH_CLIENT_MAX_RX 4096

typedef struct cf_push_client cf_push_client;

/* A client of the connection handle conn (the lws wsi, kept for the hub),
 * subscribed to every built-in topic, with an empty queue of at most
 * queue_cap messages and queue_bytes payload bytes. headroom: spare bytes
 * before each message the client queues itself (LWS_PRE). NULL on OOM. */
cf_push_client *cf_push_client_new(void *conn, pthread_mutex_t *mu, size_t queue_cap,
                                   size_t queue_bytes, size_t headroom);
/* Frees the client and unrefs what it still has queued; it must not be
 * linked. Accepts NULL. */
void cf_push_client_free(cf_push_client *c);
void *cf_push_client_conn(const cf_push_client *c);

/* The hub's list of connected clients (mu), newest first. O(1) each. */
void cf_push_client_link(cf_push_client **head, cf_push_client *c);
void cf_push_client_unlink(cf_push_client **head, cf_push_client *c);
cf_push_client *cf_push_client_next(const cf_push_client *c);

/* Whom one message goes to: the clients subscribed to a built-in topic
 * (named == NULL) or to a named topic ("view:NAME"); with repair, only
 * those of a built-in topic whose queue lost the topic's state
 * (cf_push_item.repair). */
typedef struct cf_push_audience {
    cf_topic topic;
    const char *named;
    bool repair;
} cf_push_audience;

/* (mu) True when c is subscribed to that audience. O(named topics). */
bool cf_push_client_listens(const cf_push_client *c, const cf_push_audience *to);
/* (mu) The built-in topics c is subscribed to, a bit per cf_topic, and
 * whether it named any topic. */
unsigned cf_push_client_topics(const cf_push_client *c);
bool cf_push_client_names_any(const cf_push_client *c);
/* (mu) Offers m to c's queue (push_queue.h's drop policy); returns the
 * number of messages dropped by it. */
size_t cf_push_client_offer(cf_push_client *c, cf_push_msg *m);
/* (mu) Messages queued. */
size_t cf_push_client_queued(const cf_push_client *c);
/* (mu) Takes the oldest queued messages for one write, as
 * cf_push_queue_pop_batch(); *ret_more tells whether any are left. */
size_t cf_push_client_take(cf_push_client *c, cf_push_msg **out, size_t max, size_t budget,
                           bool *ret_more);

/* What one received fragment led to. */
typedef struct cf_push_rx {
    int close_code;     /* nonzero: close the connection with this code */
    bool queued;        /* a reply was queued: ask for a writeable callback */
    bool subscribed;    /* the client's topics were replaced */
    size_t dropped;     /* messages the reply's offer dropped */
} cf_push_rx;

/* Service thread: collects a fragment of a client message (first, final:
 * where it sits in the message; binary: a binary frame) and handles the
 * message once complete. After a close code is set, the rest is ignored.
 * O(len), plus the message's parse when complete. */
cf_push_rx cf_push_client_receive(cf_push_client *c, const void *in, size_t len, bool first,
                                  bool final, bool binary);
/* Service thread: the close code set by a bad message, or 0. */
int cf_push_client_close_code(const cf_push_client *c);

#endif
