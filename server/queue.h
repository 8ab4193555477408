/* queue: a bounded single-producer single-consumer ring of message pointers,
 * one per shard (SPEC section 3: "memory stays bounded"). The producer side
 * is lock-free and is used under the engine's sequencer mutex, which is what
 * makes it single-producer; the consumer is the shard thread.
 *
 * Sleep/wake: a consumer that finds nothing to do announces itself asleep and
 * waits on a condition variable; a producer (or anyone who "kicks" the
 * consumer, e.g. to post a query) takes the mutex only when it sees that
 * announcement. A busy shard therefore costs the producer two atomic
 * operations per message and no lock.
 *
 * Dozing (issue 15): a consumer that popped messages since its last wait
 * expects more, so its next wait is a doze: a timed sleep (1 ms by
 * default) during which a push wakes it only once the ring holds a batch of
 * messages (a kick always does). Under a steady stream of small messages
 * (single-event POSTs) the consumer then wakes about once per doze instead
 * of once per message, and producers almost never pay for a wake-up; the
 * futex wake-ups and context switches of the per-message hand-off were
 * about a quarter of the server's time under S1. A doze that ends with
 * nothing to do is followed by a plain sleep, so an idle consumer costs
 * nothing; a message may wait unseen for one doze at most. */
#ifndef CF_QUEUE_H
#define CF_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cf_queue cf_queue;

/* A ring holding at most capacity (>= 1) pointers. NULL on OOM. */
cf_queue *cf_queue_new(size_t capacity);
/* Frees the ring (not the messages still in it). Accepts NULL. */
void cf_queue_free(cf_queue *q);

size_t cf_queue_capacity(const cf_queue *q);

/* Producer side. Free slots; exact for the producer (it can only grow
 * behind its back, when the consumer pops). */
size_t cf_queue_space(const cf_queue *q);
/* Appends msg (not NULL) and wakes a sleeping consumer (a dozing one only
 * once a batch is waiting). Returns false, and changes nothing, when the
 * ring is full. */
bool cf_queue_push(cf_queue *q, void *msg);
/* The same without the wake-up, for a producer holding a lock that the
 * woken consumer's thread would only make it hold longer: the caller must
 * call cf_queue_wake() after releasing it (before waiting for anything the
 * consumer does). */
bool cf_queue_push_quiet(cf_queue *q, void *msg);
/* The wake-up a push would have done (see cf_queue_push_quiet). */
void cf_queue_wake(cf_queue *q);
/* Messages pushed so far (the producer's sequence number). Any thread. */
uint64_t cf_queue_produced(const cf_queue *q);

/* Consumer side. The oldest message, or NULL when empty. */
void *cf_queue_pop(cf_queue *q);
/* Blocks until the ring is non-empty or someone kicked the consumer since
 * the last wait returned. Returns at once if either is already true. If the
 * consumer popped a message since its last wait, this wait is a doze (see
 * above): it also returns when the doze is over, with nothing to do. */
void cf_queue_wait(cf_queue *q);
/* Sets the doze of cf_queue_wait after a wait whose consumer popped
 * messages: at most doze_ns long (0: never doze, always sleep until woken),
 * woken by pushes once batch (>= 1) messages wait. Defaults: 1 ms and
 * min(64, capacity / 4). Before the consumer starts. */
void cf_queue_set_doze(cf_queue *q, long doze_ns, size_t batch);

/* Any thread: makes the consumer's current or next cf_queue_wait() return. */
void cf_queue_kick(cf_queue *q);

/* Messages waiting (approximate while both sides run). Any thread. */
size_t cf_queue_depth(const cf_queue *q);

/* Times the consumer announced it sleeps or dozes (in cf_queue_wait and
 * cf_queue_doze, once per wait on the condition variable or per wait it
 * abandoned on finding work after the announcement), and condition signals
 * sent to wake it. An announcement is signalled at most once, however many
 * pushes and kicks find it: signals <= sleeps. Any thread. */
void cf_queue_wakeups(const cf_queue *q, uint64_t *ret_sleeps, uint64_t *ret_signals);

#endif
