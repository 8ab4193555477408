/* http_accept: the HTTP listening socket and the thread that accepts on it
 * (http_int.h). libmicrohttpd's thread pool lets every worker accept from
 * one shared listening socket, and the worker that wakes first takes a
 * whole burst of connections: under wrk's 64 keep-alive connections one of
 * two workers often served 90% of the requests while the other idled, so
 * S1 ran on one core (issue 15). Handed over with MHD_add_connection,
 * libmicrohttpd places each connection on worker (fd mod workers), which
 * spreads a burst evenly; limits, notifications and the reaper see the
 * connection exactly as before. */
#include "http_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "thread_role.h"

/* Pending connections the kernel queues for us (libmicrohttpd's default). */
#define ACCEPT_BACKLOG SOMAXCONN

int http_accept_listen(cf_http *h, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int on = 1;
    /* As libmicrohttpd does: a restart may bind while old connections of
     * the previous process linger in TIME_WAIT. */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (sa->sa_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    if (bind(fd, sa, len) < 0 || listen(fd, ACCEPT_BACKLOG) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    h->listen_fd = fd;
    return 0;
}

/* Waits while the connection table is full (--max-connections), as
 * libmicrohttpd's own accept did: new clients then wait in the backlog
 * until shedding or a timeout frees a slot, instead of being accepted and
 * reset, and open sockets stay within the descriptors set aside for them.
 * A connection counts from here: in n_handed until its worker starts it
 * (http_notify_connection moves it to n_conns) or libmicrohttpd refuses it at
 * once (handed_back); libmicrohttpd 0.9.75 makes its limit and per-IP
 * checks in MHD_add_connection itself, so only an allocation failure in
 * the worker could drop one uncounted. False when stopping. */
static bool wait_for_room(cf_http *h)
{
    pthread_mutex_lock(&h->reaper_mu);
    while (h->n_conns + h->n_handed >= h->cfg.max_connections && !atomic_load(&h->accept_stopping))
        pthread_cond_wait(&h->accept_cv, &h->reaper_mu);
    h->n_handed++;
    pthread_mutex_unlock(&h->reaper_mu);
    return !atomic_load(&h->accept_stopping);
}

static void handed_back(cf_http *h)
{
    pthread_mutex_lock(&h->reaper_mu);
    if (h->n_handed > 0)
        h->n_handed--;
    pthread_mutex_unlock(&h->reaper_mu);
}

/* Errors of one connection, not of the listening socket: Linux's accept
 * passes a new connection's pending network error on as its own (accept(2),
 * "Error handling": to be treated like EAGAIN), and a connection reset
 * before it was taken is ECONNABORTED. Taking them as fatal left the server
 * running but deaf after one client's bad network (test_http_limits). */
static bool connection_error(int e)
{
    switch (e) {
    case EINTR:
    case EAGAIN:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM:          /* a firewall rule refused this connection */
    case ETIMEDOUT:
        return true;
    default:
        return false;
    }
}

static void *accept_main(void *arg)
{
    cf_http *h = arg;
    cf_thread_role_name("cf-http-accept");
    for (;;) {
        if (!wait_for_room(h))
            break;
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(h->listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (atomic_load(&h->accept_stopping)) {
            if (fd >= 0)
                close(fd);
            break;
        }
        if (fd < 0)
            handed_back(h);
        if (fd < 0) {
            int e = errno;
            if (e == EBADF || e == EINVAL || e == ENOTSOCK || e == EFAULT) {
                /* The listening socket itself is unusable. */
                cf_warn("http: accept failed (%s); no more connections are accepted", strerror(e));
                break;
            }
            if (connection_error(e))
                continue;
            /* Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
             * ENOMEM), or anything else: the connections wait in the
             * backlog; try again shortly rather than spin, and never give
             * up on a socket that still listens. */
            if (!h->accept_warned) {
                h->accept_warned = true;
                cf_warn("http: accept failed (%s); retrying", strerror(e));
            }
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        /* Closes fd itself when refused (connection or per-IP limit). */
        if (MHD_add_connection(h->daemon, fd, (const struct sockaddr *)&ss, len) != MHD_YES)
            handed_back(h);
    }
    return NULL;
}

int http_accept_start(cf_http *h)
{
    if (pthread_create(&h->acceptor, NULL, accept_main, h) != 0)
        return -EAGAIN;
    h->accept_started = true;
    cf_thread_role_name_thread(h->acceptor, "cf-http-accept");
    return 0;
}

void http_accept_stop(cf_http *h)
{
    if (h->accept_started) {
        pthread_mutex_lock(&h->reaper_mu);
        atomic_store(&h->accept_stopping, true);
        pthread_cond_signal(&h->accept_cv);
        pthread_mutex_unlock(&h->reaper_mu);
        /* Makes the blocked accept4 return (EINVAL on Linux). */
        shutdown(h->listen_fd, SHUT_RDWR);
        pthread_join(h->acceptor, NULL);
        h->accept_started = false;
    }
    if (h->listen_fd >= 0) {
        close(h->listen_fd);
        h->listen_fd = -1;
    }
}
