/* push_queue: the per-client bounded message queue of the WebSocket hub
 * (server/push.c), kept apart so its drop policy can be tested exactly.
 *
 * A message is published once and shared by every client queue that holds
 * it (reference counted); its bytes sit after `headroom` spare bytes, which
 * libwebsockets needs in front of the payload (LWS_PRE) to write the frame
 * header in place.
 *
 * A queue is bounded twice: in messages (cap) and in payload bytes
 * (cap_bytes), since one message may be large (a batch of late events with
 * long escaped URLs) and a client that never reads must not hold more than
 * cap_bytes however the bytes are split. A message larger than cap_bytes is
 * refused outright (counted as one drop), since the library's copy of a
 * partly sent message is bounded by the largest message a queue takes. A
 * shared message counts fully in every queue holding it: the bound is per
 * client.
 *
 * Drop policy when a queue is full, in messages or in bytes (SPEC 9: a slow
 * client loses interim updates first, and the drops are counted):
 *   - an interim message evicts the oldest interim message queued; when none
 *     is queued, the new interim message itself is refused;
 *   - a non-interim (final) message evicts the oldest interim message, or,
 *     when none is queued, the oldest message.
 * repeated until the new message fits. Each eviction or refusal counts as
 * one drop. The queue is not thread-safe:
 * push.c guards it with the hub mutex.
 *
 * Lost state. A publisher that sends a topic's current state only when it
 * changed (the ticker's interim windows and trending) marks those messages
 * with a state bit. When the queue drops such a message (evicted or
 * refused) and holds no later message with that bit, the client no longer
 * has the current state: the queue remembers the bit (cf_push_queue_lost)
 * until a message with that bit is queued again. The publisher resends the
 * unchanged state to such clients only (push.h, cf_push_item.repair). */
#ifndef CF_PUSH_QUEUE_H
#define CF_PUSH_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct cf_push_msg {
    atomic_uint refs;
    bool interim;
    unsigned state;         /* state bit (see above), 0 for none; cf_push_msg_new sets 0 */
    size_t len;             /* payload bytes, not counting headroom or the NUL */
    size_t headroom;
    unsigned char buf[];    /* headroom spare bytes, then len payload bytes, then a NUL */
} cf_push_msg;

/* Copies data (len bytes) into a new message holding one reference. NULL on
 * OOM or when the size overflows. O(len). */
cf_push_msg *cf_push_msg_new(const char *data, size_t len, size_t headroom, bool interim);
/* The payload, with msg->headroom writable bytes before it. */
static inline unsigned char *cf_push_msg_payload(cf_push_msg *m) { return m->buf + m->headroom; }
void cf_push_msg_ref(cf_push_msg *m);
/* Drops one reference; frees the message with the last one. Accepts NULL.
 * Safe from any thread. */
void cf_push_msg_unref(cf_push_msg *m);

typedef struct cf_push_queue cf_push_queue;

/* A queue of at most cap messages (cap >= 1) and cap_bytes payload bytes.
 * NULL on OOM or cap == 0. */
cf_push_queue *cf_push_queue_new(size_t cap, size_t cap_bytes);
/* Unrefs every queued message. Accepts NULL. */
void cf_push_queue_free(cf_push_queue *q);

/* Offers m under the drop policy above. When m is queued the queue takes a
 * reference of its own (the caller keeps its reference either way). Returns
 * the number of messages dropped by this call (a refused m counts). O(1)
 * when m fits; each eviction costs O(cap) at worst (from the middle). */
size_t cf_push_queue_offer(cf_push_queue *q, cf_push_msg *m);
/* Removes the oldest message and hands its reference to the caller; NULL
 * when empty. O(1). */
cf_push_msg *cf_push_queue_pop(cf_push_queue *q);
size_t cf_push_queue_len(const cf_push_queue *q);
/* Payload bytes queued. O(1). */
size_t cf_push_queue_bytes(const cf_push_queue *q);
/* Number of interim messages queued. O(1). */
size_t cf_push_queue_interim(const cf_push_queue *q);
/* The state bits whose latest message this queue dropped (see above). O(1). */
unsigned cf_push_queue_lost(const cf_push_queue *q);

/* Coalesced writes. The hub sends every message a client has queued in one
 * write of back-to-back WebSocket frames rather than one write (one send(2)
 * and, on loopback, one delivery to the reader) per message; the send was
 * most of the push thread's cost with 500 clients.
 *
 * Frame header of an unfragmented server-to-client text frame (RFC 6455
 * 5.2: FIN, opcode 1, no mask) for len payload bytes: 2, 4 or 10 bytes,
 * the same bytes libwebsockets writes for LWS_WRITE_TEXT. */
#define CF_PUSH_FRAME_HDR_MAX 10
size_t cf_push_frame_header_len(size_t len);
/* Writes that header into out (cf_push_frame_header_len(len) bytes);
 * returns its length. */
size_t cf_push_frame_header(unsigned char *out, size_t len);
/* Pops the oldest messages, in order, as long as their frames (header and
 * payload) add up to at most budget bytes, and always the oldest one (a
 * message alone may exceed budget), but at most max; hands their
 * references to the caller in out[]. Returns how many (0 when empty). */
size_t cf_push_queue_pop_batch(cf_push_queue *q, cf_push_msg **out, size_t max, size_t budget);

#endif
