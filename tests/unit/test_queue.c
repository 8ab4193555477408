/* Unit tests for server/queue: the bounded SPSC ring and its sleep/wake
 * protocol. Thread tests never sleep for timing: they join and compare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "queue.h"

static void *tok(uintptr_t i) { return (void *)(i + 1); }   /* never NULL */
static uintptr_t untok(void *p) { return (uintptr_t)p - 1; }

static void bounds_exact(void **state)
{
    (void)state;
    assert_null(cf_queue_new(0));
    cf_queue *q = cf_queue_new(3);
    assert_non_null(q);
    assert_int_equal(cf_queue_capacity(q), 3);
    assert_int_equal(cf_queue_space(q), 3);
    assert_null(cf_queue_pop(q));
    for (uintptr_t i = 0; i < 3; i++)
        assert_true(cf_queue_push(q, tok(i)));
    assert_int_equal(cf_queue_space(q), 0);
    assert_int_equal(cf_queue_depth(q), 3);
    assert_false(cf_queue_push(q, tok(99)));        /* full: refused, nothing changed */
    assert_int_equal(cf_queue_produced(q), 3);
    assert_int_equal(untok(cf_queue_pop(q)), 0);
    assert_int_equal(cf_queue_space(q), 1);
    assert_true(cf_queue_push(q, tok(3)));          /* wraps around */
    for (uintptr_t i = 1; i < 4; i++)
        assert_int_equal(untok(cf_queue_pop(q)), i);
    assert_null(cf_queue_pop(q));
    assert_int_equal(cf_queue_depth(q), 0);
    assert_int_equal(cf_queue_produced(q), 4);
    cf_queue_free(q);
    cf_queue_free(NULL);
}

static void kick_makes_wait_return(void **state)
{
    (void)state;
    cf_queue *q = cf_queue_new(4);
    cf_queue_kick(q);
    cf_queue_wait(q);   /* would block forever without the kick */
    assert_true(cf_queue_push(q, tok(0)));
    cf_queue_wait(q);   /* non-empty: returns at once */
    assert_int_equal(untok(cf_queue_pop(q)), 0);
    cf_queue_free(q);
}

enum { N_MSGS = 50000 };

typedef struct consumer_ctx {
    cf_queue *q;
    uintptr_t *got;
    size_t n;
} consumer_ctx;

static void *consumer(void *arg)
{
    consumer_ctx *c = arg;
    while (c->n < N_MSGS) {
        void *m = cf_queue_pop(c->q);
        if (!m) {
            cf_queue_wait(c->q);
            continue;
        }
        c->got[c->n++] = untok(m);
    }
    return NULL;
}

/* Two threads, a tiny ring so the producer hits "full" and the consumer
 * sleeps often: every message arrives once, in order. */
static void two_threads_in_order(void **state)
{
    (void)state;
    cf_queue *q = cf_queue_new(7);
    consumer_ctx c = {.q = q, .got = calloc(N_MSGS, sizeof(uintptr_t)), .n = 0};
    assert_non_null(c.got);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, consumer, &c), 0);
    size_t full = 0;
    for (uintptr_t i = 0; i < N_MSGS; i++) {
        while (!cf_queue_push(q, tok(i))) {
            full++;
            sched_yield();
        }
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(c.n, N_MSGS);
    for (uintptr_t i = 0; i < N_MSGS; i++)
        if (c.got[i] != i)
            fail_msg("message %zu arrived as %zu", (size_t)i, (size_t)c.got[i]);
    assert_int_equal(cf_queue_depth(q), 0);
    free(c.got);
    cf_queue_free(q);
}

typedef struct burst_ctx {
    cf_queue *q;
    size_t got;
} burst_ctx;

static void *burst_consumer(void *arg)
{
    burst_ctx *c = arg;
    while (c->got < N_MSGS) {
        if (cf_queue_pop(c->q))
            c->got++;
        else
            cf_queue_wait(c->q);
    }
    return NULL;
}

/* Several pushes that find the consumer asleep signal it once: the first
 * takes the announcement, the others see it taken (each push used to lock
 * and signal until the woken consumer cleared the flag, issue 15). Two
 * producer threads (one pushing at a time, as under the sequencer lock)
 * against a consumer that sleeps and wakes between their pushes. */
static void *burst_producer(void *arg)
{
    burst_ctx *c = arg;
    static pthread_mutex_t push_mu = PTHREAD_MUTEX_INITIALIZER; /* single producer at a time */
    for (uintptr_t i = 0; i < N_MSGS / 2; i++) {
        pthread_mutex_lock(&push_mu);
        while (!cf_queue_push(c->q, tok(i))) {
            pthread_mutex_unlock(&push_mu);
            sched_yield();
            pthread_mutex_lock(&push_mu);
        }
        pthread_mutex_unlock(&push_mu);
    }
    return NULL;
}

static void one_signal_per_sleep(void **state)
{
    (void)state;
    burst_ctx c = {.q = cf_queue_new(64), .got = 0};
    assert_non_null(c.q);
    pthread_t cons, prod[2];
    assert_int_equal(pthread_create(&cons, NULL, burst_consumer, &c), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&prod[k], NULL, burst_producer, &c), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(prod[k], NULL), 0);
    assert_int_equal(pthread_join(cons, NULL), 0);
    assert_int_equal(c.got, N_MSGS);
    uint64_t sleeps, signals;
    cf_queue_wakeups(c.q, &sleeps, &signals);
    print_message("%d messages: consumer announced sleep %llu times, %llu signals\n", N_MSGS,
                  (unsigned long long)sleeps, (unsigned long long)signals);
    assert_true(signals <= sleeps);
    cf_queue_free(c.q);
}

typedef struct kick_ctx {
    cf_queue *q;
    atomic_int *flag;
    int rounds;
} kick_ctx;

static void *kick_waiter(void *arg)
{
    kick_ctx *k = arg;
    int seen = 0;
    while (seen < k->rounds) {
        cf_queue_wait(k->q);
        seen = atomic_load(k->flag);
    }
    return NULL;
}

/* A consumer waiting only on kicks (no messages) never misses one. */
static void kicks_from_another_thread(void **state)
{
    (void)state;
    cf_queue *q = cf_queue_new(1);
    atomic_int flag;
    atomic_init(&flag, 0);
    kick_ctx k = {.q = q, .flag = &flag, .rounds = 20000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, kick_waiter, &k), 0);
    for (int i = 1; i <= k.rounds; i++) {
        atomic_store(&flag, i);
        cf_queue_kick(q);
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    cf_queue_free(q);
}

/* A consumer that popped a message dozes in its next wait, and the doze
 * ends by itself: with nothing pushed this wait would block forever. */
static void doze_after_pop_ends_by_itself(void **state)
{
    (void)state;
    cf_queue *q = cf_queue_new(8);
    cf_queue_set_doze(q, 1000000L, 4);
    assert_true(cf_queue_push(q, tok(0)));
    assert_int_equal(untok(cf_queue_pop(q)), 0);
    cf_queue_wait(q);
    assert_null(cf_queue_pop(q));
    cf_queue_free(q);
}

typedef struct doze_ctx {
    cf_queue *q;
    bool pop_first;         /* pop one message before waiting: the wait dozes */
} doze_ctx;

static void *doze_consumer(void *arg)
{
    doze_ctx *c = arg;
    if (c->pop_first)
        assert_non_null(cf_queue_pop(c->q));
    cf_queue_wait(c->q);
    return NULL;
}

/* Waits until the consumer has announced n sleeps (it is then in, or about
 * to enter, its timed or plain wait: a signal cannot be lost either way). */
static void await_sleeps(cf_queue *q, uint64_t n)
{
    uint64_t sleeps = 0, signals = 0;
    for (;;) {
        cf_queue_wakeups(q, &sleeps, &signals);
        if (sleeps >= n)
            return;
        sched_yield();
    }
}

/* A consumer that pops one message and then dozes in its wait, an hour
 * long with the given batch: returns its thread once it announced that sleep. */
static pthread_t start_dozing_consumer(doze_ctx *c, size_t batch)
{
    c->q = cf_queue_new(16);
    assert_non_null(c->q);
    cf_queue_set_doze(c->q, 3600L * 1000000000L, batch);
    assert_true(cf_queue_push(c->q, tok(0)));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, doze_consumer, c), 0);
    await_sleeps(c->q, 1);
    return t;
}

/* While the consumer dozes, pushes below the batch cost no wake-up; the
 * push that completes the batch wakes it (the doze is an hour long here, so
 * only that signal can end it). */
static void dozing_consumer_woken_by_a_batch(void **state)
{
    (void)state;
    doze_ctx c = {.pop_first = true};
    pthread_t t = start_dozing_consumer(&c, 4);
    uint64_t sleeps, signals;
    for (uintptr_t i = 1; i <= 3; i++)
        assert_true(cf_queue_push(c.q, tok(i)));
    cf_queue_wakeups(c.q, &sleeps, &signals);
    assert_int_equal(signals, 0);
    /* The fourth waiting completes the batch: the join returns (with an
     * hour-long doze, only a wake-up or an early look at the ring, if the
     * pushes beat the consumer's check, can end the wait). */
    assert_true(cf_queue_push(c.q, tok(4)));
    assert_int_equal(pthread_join(t, NULL), 0);
    cf_queue_wakeups(c.q, &sleeps, &signals);
    assert_true(signals <= 1);
    for (uintptr_t i = 1; i <= 4; i++)
        assert_int_equal(untok(cf_queue_pop(c.q)), i);
    cf_queue_free(c.q);
}

/* A kick wakes a dozing consumer at once, and a consumer that popped
 * nothing since its last wait sleeps: its first push wakes it. */
static void kick_ends_a_doze_and_idle_sleeps(void **state)
{
    (void)state;
    doze_ctx c = {.pop_first = true};
    pthread_t t = start_dozing_consumer(&c, 8);
    cf_queue_kick(c.q);
    assert_int_equal(pthread_join(t, NULL), 0);   /* not an hour later */
    uint64_t sleeps, signals;
    cf_queue_wakeups(c.q, &sleeps, &signals);

    c.pop_first = false;
    assert_int_equal(pthread_create(&t, NULL, doze_consumer, &c), 0);
    await_sleeps(c.q, sleeps + 1);
    assert_true(cf_queue_push(c.q, tok(1)));     /* one message, far below the batch */
    assert_int_equal(pthread_join(t, NULL), 0);   /* a sleep, not an hour's doze */
    cf_queue_free(c.q);
}

/* A quiet push leaves the wake-up to cf_queue_wake. */
static void quiet_push_then_wake(void **state)
{
    (void)state;
    doze_ctx c = {.q = cf_queue_new(4), .pop_first = false};
    assert_non_null(c.q);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, doze_consumer, &c), 0);
    await_sleeps(c.q, 1);
    assert_true(cf_queue_push_quiet(c.q, tok(0)));
    uint64_t sleeps, signals;
    cf_queue_wakeups(c.q, &sleeps, &signals);
    assert_int_equal(signals, 0);
    cf_queue_wake(c.q);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(untok(cf_queue_pop(c.q)), 0);
    cf_queue_free(c.q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bounds_exact),
        cmocka_unit_test(kick_makes_wait_return),
        cmocka_unit_test(two_threads_in_order),
        cmocka_unit_test(kicks_from_another_thread),
        cmocka_unit_test(one_signal_per_sleep),
        cmocka_unit_test(doze_after_pop_ends_by_itself),
        cmocka_unit_test(dozing_consumer_woken_by_a_batch),
        cmocka_unit_test(kick_ends_a_doze_and_idle_sleeps),
        cmocka_unit_test(quiet_push_then_wake),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
