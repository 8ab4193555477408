/* queue: bounded SPSC ring with a sleep/wake protocol (see queue.h).
 *
 * head and tail are free-running 64-bit counters (they never wrap in
 * practice); slot i lives at i % capacity, so any capacity works. The
 * producer publishes a slot with a release store of tail, the consumer frees
 * one with a release store of head.
 *
 * Lost wake-ups are avoided with the classic Dekker pattern on sequentially
 * consistent atomics: the consumer stores sleeping = 1 and then re-reads
 * tail/kicked; the producer stores tail (or kicked) and then reads sleeping.
 * At least one of them sees the other's store. The consumer stores and
 * re-checks under the mutex before each wait and the producer signals under
 * the mutex, so the signal cannot fall between the consumer's check and its
 * wait.
 *
 * One signal per sleep: the producer takes the announcement with an
 * exchange, so of several producers (or pushes) that find the consumer
 * asleep only the first locks and signals; the others see it already woken.
 * (Each push used to signal until the woken consumer cleared the flag
 * itself: futex wake-ups and mutex hand-offs were a tenth of the server's
 * time under single-event POSTs, issue 15.) Because a producer clears the
 * flag, the consumer sets it again before every wait, including after a
 * wake-up that found nothing (a late signal from a push it already took).
 *
 * A dozing consumer announces DOZING instead of ASLEEP and waits with a
 * deadline; a push that finds DOZING wakes it only when the ring holds
 * doze_batch messages, which keeps the Dekker argument: the producer reads
 * the announcement after publishing tail, so either the consumer's check
 * sees the message or the producer sees the announcement and judges the
 * depth it just made. A message below the batch waits for the deadline at
 * most. */
#include "queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

/* The consumer's announcement (sleeping). */
enum { AWAKE = 0, ASLEEP = 1, DOZING = 2 };

struct cf_queue {
    size_t cap;
    /* Consumer-owned line. */
    _Alignas(64) _Atomic uint64_t head;
    /* Producer-owned line. */
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) atomic_int sleeping;   /* AWAKE, ASLEEP or DOZING */
    atomic_int kicked;
    _Atomic size_t doze_batch;          /* while DOZING: depth that wakes */
    long doze_ns;                       /* 0: never doze */
    bool popped;                        /* consumer's: popped since its last wait */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    _Atomic uint64_t sleeps, signals; /* cf_queue_wakeups: announcements, signals */
    void *_Atomic *slots;
};

cf_queue *cf_queue_new(size_t capacity)
{
    if (capacity == 0)
        return NULL;
    cf_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->slots = calloc(capacity, sizeof *q->slots);
    if (!q->slots) {
        free(q);
        return NULL;
    }
    q->cap = capacity;
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    atomic_init(&q->sleeping, 0);
    atomic_init(&q->kicked, 0);
    atomic_init(&q->doze_batch, capacity / 4 < 64 ? (capacity / 4 ? capacity / 4 : 1) : 64);
    q->doze_ns = 1000000L;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    return q;
}

void cf_queue_free(cf_queue *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cond);
    free((void *)q->slots);
    free(q);
}

size_t cf_queue_capacity(const cf_queue *q) { return q->cap; }

size_t cf_queue_space(const cf_queue *q)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    return q->cap - (size_t)(tail - head);
}

/* Wakes the consumer if it announced that it sleeps, or that it dozes and
 * a batch is waiting (always for a kick). Called after a seq_cst store of
 * tail or kicked (see the file comment). */
static void wake(cf_queue *q, bool kick)
{
    /* Cheap load first: a busy consumer costs no write to its line. */
    int s = atomic_load(&q->sleeping);
    if (s == AWAKE)
        return;
    if (s == DOZING && !kick &&
        cf_queue_depth(q) < atomic_load_explicit(&q->doze_batch, memory_order_relaxed))
        return;
    if (atomic_exchange(&q->sleeping, AWAKE) != AWAKE) {
        pthread_mutex_lock(&q->mu);
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->mu);
        atomic_fetch_add_explicit(&q->signals, 1, memory_order_relaxed);
    }
}

bool cf_queue_push_quiet(cf_queue *q, void *msg)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail - head >= q->cap)
        return false;
    atomic_store_explicit(&q->slots[tail % q->cap], msg, memory_order_relaxed);
    atomic_store(&q->tail, tail + 1);   /* seq_cst: release + Dekker */
    return true;
}

/* The Dekker pairing still holds when the wake comes later: the consumer
 * that announced sleeping before the tail store is seen here; one that
 * announces after it sees the message in its ready() check. */
void cf_queue_wake(cf_queue *q) { wake(q, false); }

bool cf_queue_push(cf_queue *q, void *msg)
{
    if (!cf_queue_push_quiet(q, msg))
        return false;
    wake(q, false);
    return true;
}

uint64_t cf_queue_produced(const cf_queue *q)
{
    return atomic_load_explicit(&q->tail, memory_order_acquire);
}

void *cf_queue_pop(cf_queue *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (head == tail)
        return NULL;
    void *msg = atomic_load_explicit(&q->slots[head % q->cap], memory_order_relaxed);
    atomic_store_explicit(&q->head, head + 1, memory_order_release);
    q->popped = true;
    return msg;
}

/* True when the consumer has something to do. */
static bool ready(cf_queue *q)
{
    return atomic_load(&q->tail) != atomic_load_explicit(&q->head, memory_order_relaxed) ||
           atomic_load(&q->kicked);
}

void cf_queue_wait(cf_queue *q)
{
    long doze_ns = q->popped ? q->doze_ns : 0;
    q->popped = false;
    if (!ready(q)) {
        struct timespec due;
        if (doze_ns > 0) {
            clock_gettime(CLOCK_MONOTONIC, &due);
            due.tv_nsec += doze_ns;
            while (due.tv_nsec >= 1000000000L) {
                due.tv_nsec -= 1000000000L;
                due.tv_sec++;
            }
        }
        pthread_mutex_lock(&q->mu);
        for (;;) {
            atomic_store(&q->sleeping, doze_ns > 0 ? DOZING : ASLEEP);
            atomic_fetch_add_explicit(&q->sleeps, 1, memory_order_relaxed);
            if (ready(q))
                break;
            if (doze_ns <= 0)
                pthread_cond_wait(&q->cond, &q->mu);
            else if (pthread_cond_timedwait(&q->cond, &q->mu, &due) == ETIMEDOUT)
                break;
        }
        pthread_mutex_unlock(&q->mu);
        atomic_store(&q->sleeping, AWAKE);
    }
    /* Consume the kick: whoever kicked posted its work before kicking, so
     * the caller sees that work when it looks after we return. */
    atomic_store(&q->kicked, 0);
}

void cf_queue_set_doze(cf_queue *q, long doze_ns, size_t batch)
{
    q->doze_ns = doze_ns > 0 ? doze_ns : 0;
    atomic_store(&q->doze_batch, batch ? batch : 1);
}

void cf_queue_kick(cf_queue *q)
{
    atomic_store(&q->kicked, 1);
    wake(q, true);
}

size_t cf_queue_depth(const cf_queue *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    return tail >= head ? (size_t)(tail - head) : 0;
}

void cf_queue_wakeups(const cf_queue *q, uint64_t *ret_sleeps, uint64_t *ret_signals)
{
    *ret_sleeps = atomic_load_explicit(&q->sleeps, memory_order_relaxed);
    *ret_signals = atomic_load_explicit(&q->signals, memory_order_relaxed);
}
