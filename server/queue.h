/* queue: a bounded single-producer single-consumer ring of message pointers,
 * one per shard (SPEC section 3: "memory stays bounded"). The producer side
 * is lock-free and is used under the engine's sequencer mutex, which is what
 * makes it single-producer; the consumer is the shard thread.
 *
 * Sleep/wake: a consumer that finds nothing to do announces itself asleep and
 * waits on a condition variable; a producer (or anyone who "kicks" the
 * consumer, e.g. to post a query) takes the mutex only when it sees that
 * announcement. A busy shard therefore costs the producer two atomic
 * operations per message and no lock. */
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
/* Appends msg (not NULL) and wakes a sleeping consumer. Returns false, and
 * changes nothing, when the ring is full. */
bool cf_queue_push(cf_queue *q, void *msg);
/* cf_queue_push without the wake: the producer calls cf_queue_wake later
 * (after releasing a lock it holds, say). Until then a sleeping consumer
 * may not notice the message. */
bool cf_queue_push_quiet(cf_queue *q, void *msg);
/* Wakes the consumer if it sleeps (the wake of a cf_queue_push_quiet). */
void cf_queue_wake(cf_queue *q);
/* Messages pushed so far (the producer's sequence number). Any thread. */
uint64_t cf_queue_produced(const cf_queue *q);

/* Consumer side. The oldest message, or NULL when empty. */
void *cf_queue_pop(cf_queue *q);
/* Blocks until the ring is non-empty or someone kicked the consumer since
 * the last wait returned. Returns at once if either is already true. */
void cf_queue_wait(cf_queue *q);

/* Any thread: makes the consumer's current or next cf_queue_wait() return. */
void cf_queue_kick(cf_queue *q);

/* Messages waiting (approximate while both sides run). Any thread. */
size_t cf_queue_depth(const cf_queue *q);

/* Times the consumer announced it sleeps (in cf_queue_wait, once per wait
 * on the condition variable or per wait it abandoned on finding work after
 * the announcement), and condition signals sent to wake it. An announcement
 * is signalled at most once, however many pushes and kicks find it:
 * signals <= sleeps. Any thread. */
void cf_queue_wakeups(const cf_queue *q, uint64_t *ret_sleeps, uint64_t *ret_signals);

#endif
