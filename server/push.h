/* push: the WebSocket hub (SPEC section 9), built on libwebsockets with its
 * own service thread. Other threads publish complete JSON messages; each
 * client has a bounded queue, and a slow client loses interim messages first
 * (counted), so publishing never blocks and one client never slows another
 * or ingest. */
#ifndef CF_PUSH_H
#define CF_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct cf_push cf_push;

/* Topics a client may subscribe to ({"subscribe": [...]}; default all). */
typedef enum cf_topic {
    CF_TOPIC_WINDOWS = 0,
    CF_TOPIC_TRENDING,
    CF_TOPIC_SESSIONS,   /* messages of type "session_end" */
    CF_TOPIC_STATS,
    CF_TOPIC_LATE,
    CF_TOPIC_COUNT
} cf_topic;

/* Listens on cfg->bind:cfg->ws_port and starts the service thread. Checks
 * Origin against cfg->cors_origins and, when cfg->read_token is set, requires
 * it (?token= or Authorization: Bearer). NULL with *ret_err set on failure. */
cf_push *cf_push_start(const cf_config *cfg, const char **ret_err);
/* Closes every client and joins the thread. Accepts NULL. */
void cf_push_stop(cf_push *p);

/* Queues msg (a complete {"type":...,"data":...} text, copied) for every
 * client subscribed to topic. interim messages are the first dropped when a
 * client's queue is full. Thread-safe, O(clients), never blocks on I/O. */
void cf_push_publish(cf_push *p, cf_topic topic, const char *msg, size_t len, bool interim);

/* One message of a group. state: the message is the topic's whole current
 * state (the ticker's interim windows, trending), sent only when it changed,
 * so a client whose queue dropped it without a later one is left stale: the
 * hub notes that (push_queue.h, lost state). repair: offer the message only
 * to the clients so left (an unchanged state sent again, cheaply, after a
 * drop; see cf_push_dropped). */
typedef struct cf_push_item {
    cf_topic topic;
    const char *msg;
    size_t len;
    bool interim;
    bool state;
    bool repair;
} cf_push_item;
/* Publishes n messages as cf_push_publish() would, in order, with one
 * wake-up of the service thread for the group: a client subscribed to
 * several of them gets them in one write. The ticker's windows, trending
 * and stats of one tick went out as three writes (three send(2)s, three
 * poll rounds) to every client. Thread-safe, O(n * clients), never blocks
 * on I/O; an item with a bad topic or no msg ends the group there. */
#define CF_PUSH_GROUP_MAX 8
void cf_push_publish_group(cf_push *p, const cf_push_item *items, size_t n);

/* The same for a named topic of continuous SQL ("view:NAME",
 * "stream:NAME"): clients get it only when they subscribed to that name
 * (at most CF_PUSH_MAX_NAMED names of CF_PUSH_MAX_TOPIC bytes each). */
#define CF_PUSH_MAX_NAMED 64
#define CF_PUSH_MAX_TOPIC 300
void cf_push_publish_named(cf_push *p, const char *topic, const char *msg, size_t len, bool interim);
size_t cf_push_clients(const cf_push *p);
/* Whether any client is subscribed to topic, or to any named topic. A
 * publisher asks before it renders or computes a message: a client that
 * took only "stats" costs the shards no window or session JSON. Accept
 * NULL (false). */
bool cf_push_listened(const cf_push *p, cf_topic topic);
bool cf_push_listened_named(const cf_push *p);
uint64_t cf_push_dropped(const cf_push *p);   /* messages dropped for slow clients */
uint64_t cf_push_sent(const cf_push *p);     /* messages written to clients */
/* Writes to clients (each carries one or more messages). */
uint64_t cf_push_writes(const cf_push *p);
/* Wake-ups of the service thread by publishers (one per publishing call
 * that queued something). */
uint64_t cf_push_wakes(const cf_push *p);
/* Counts clients that connected or replaced their topics. A publisher that
 * pushes only on change (the ticker's interim windows and trending) pushes
 * its current content again when this moved, so a new subscriber gets it
 * within one --push-interval without waiting for a change. */
uint64_t cf_push_joins(const cf_push *p);

#endif
