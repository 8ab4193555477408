/* http_park: requests whose events are logged but not yet durable wait
 * here without an HTTP thread (http_int.h has the contract). One committer
 * thread takes the largest LSN parked, commits it (one write + fdatasync
 * for everything logged so far: the group commit of cf_wal_commit), and
 * resumes every request at or below it. Requests parked meanwhile go into
 * the next round, so a round's fsync covers all that arrived during the
 * previous one. */
#include "http_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "engine.h"
#include "park_gather.h"
#include "thread_role.h"

/* Unlinks rq from the parked list (park_mu held); prev is its predecessor
 * or NULL. */
static void unlink_locked(cf_http *h, request *prev, request *rq)
{
    if (prev)
        prev->park_next = rq->park_next;
    else
        h->parked = rq->park_next;
    if (h->parked_tail == rq)
        h->parked_tail = prev;
    rq->park_next = NULL;
}

/* Hands rq back to MHD with its outcome (park_mu held). MHD calls
 * access_handler again on the connection's own thread. */
static void resume_locked(cf_http *h, request *rq, int rc)
{
    rq->park_rc = rc;
    rq->park_state = PARK_DONE;
    atomic_fetch_sub(&h->n_parked, 1);
    MHD_resume_connection(rq->park_conn);
}

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Waits (park_mu held) while park_gather says the requests that were
 * waiting when the last round ended are still coming back; a parker wakes
 * it once enough are parked (park_want), not every parker. */
static void gather(cf_http *h, const park_gather *g)
{
    if (h->gather_off)
        return;
    int64_t t0 = mono_ns(), wait;
    h->park_want = park_gather_want(g);
    while (!h->http_park_stop &&
           (wait = park_gather_wait_ns(g, atomic_load(&h->n_parked), mono_ns() - t0)) > 0) {
        struct timespec due;
        clock_gettime(CLOCK_MONOTONIC, &due);
        due.tv_nsec += wait;
        due.tv_sec += due.tv_nsec / 1000000000;
        due.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&h->park_cv, &h->park_mu, &due);
    }
    h->park_want = 0;
}

static void *park_main(void *arg)
{
    cf_http *h = arg;
    cf_thread_role_name("cf-http-park");
    park_gather g = {0};
    pthread_mutex_lock(&h->park_mu);
    for (;;) {
        while (!h->parked && !h->http_park_stop)
            pthread_cond_wait(&h->park_cv, &h->park_mu);
        if (!h->parked && h->http_park_stop)
            break;
        gather(h, &g);
        if (!h->parked)
            continue;   /* the reaper took them all meanwhile */
        int64_t upto = 0;
        for (request *rq = h->parked; rq; rq = rq->park_next)
            if (rq->park_upto > upto)
                upto = rq->park_upto;
        pthread_mutex_unlock(&h->park_mu);
        int64_t c0 = mono_ns();
        int rc = cf_engine_commit(h->engine, upto);
        int64_t took = mono_ns() - c0;
        pthread_mutex_lock(&h->park_mu);
        atomic_fetch_add_explicit(&h->park_rounds, 1, memory_order_relaxed);
        unsigned group = 0;
        /* The reaper may have taken some (deadline); the rest at or below
         * upto are durable now (or the log failed: all of them get 503). */
        request *prev = NULL;
        for (request *rq = h->parked; rq;) {
            request *next = rq->park_next;
            if (rq->park_upto <= upto || rc < 0) {
                unlink_locked(h, prev, rq);
                resume_locked(h, rq, rc);
                group++;
            } else {
                prev = rq;
            }
            rq = next;
        }
        park_gather_done(&g, group, atomic_load(&h->n_parked), took);
    }
    pthread_mutex_unlock(&h->park_mu);
    return NULL;
}

int http_park_start(cf_http *h)
{
    if (pthread_create(&h->park_thread, NULL, park_main, h) != 0)
        return -EAGAIN;
    h->park_started = true;
    return 0;
}

void http_park_stop(cf_http *h)
{
    if (!h->park_started)
        return;
    pthread_mutex_lock(&h->park_mu);
    h->http_park_stop = true;
    pthread_cond_signal(&h->park_cv);
    pthread_mutex_unlock(&h->park_mu);
    pthread_join(h->park_thread, NULL);
    h->park_started = false;
}

bool http_park_request(cf_http *h, request *rq, struct MHD_Connection *c, int64_t upto)
{
    pthread_mutex_lock(&h->park_mu);
    if (h->http_park_stop || !h->park_started) {
        pthread_mutex_unlock(&h->park_mu);
        return false;
    }
    rq->park_conn = c;
    rq->park_upto = upto;
    rq->park_deadline_ms = rq->start_ms + h->cfg.request_deadline_ms;
    rq->park_state = PARK_WAITING;
    rq->park_next = NULL;
    /* Suspended before the committer can see it, so its resume always
     * follows this suspend (both under park_mu). */
    MHD_suspend_connection(c);
    if (h->parked_tail)
        h->parked_tail->park_next = rq;
    else
        h->parked = rq;
    h->parked_tail = rq;
    unsigned n = atomic_fetch_add(&h->n_parked, 1) + 1;
    atomic_fetch_add_explicit(&h->parked_total, 1, memory_order_relaxed);
    /* While the committer gathers, only the request that completes its
     * group wakes it (one wake-up per round, not one per request). */
    if (n >= h->park_want)
        pthread_cond_signal(&h->park_cv);
    pthread_mutex_unlock(&h->park_mu);
    return true;
}

void http_park_expire(cf_http *h, int64_t now)
{
    pthread_mutex_lock(&h->park_mu);
    request *prev = NULL;
    for (request *rq = h->parked; rq;) {
        request *next = rq->park_next;
        if (now >= rq->park_deadline_ms) {
            unlink_locked(h, prev, rq);
            resume_locked(h, rq, -ETIMEDOUT);
        } else {
            prev = rq;
        }
        rq = next;
    }
    pthread_mutex_unlock(&h->park_mu);
}
