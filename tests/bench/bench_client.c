/* bench_client: a small HTTP/1.1 keep-alive load generator for the
 * benchmarks (loopback only). One epoll thread drives --conns connections,
 * each sending one request at a time; with --rate it paces requests evenly
 * and measures latency from the scheduled send time (no coordinated
 * omission), without --rate it sends as fast as answers come back.
 *
 *   bench_client --port P [--host 127.0.0.1] [--path /api/v1/events]
 *                [--conns 8] [--duration 10] [--rate 0] [--events-per-body 1]
 *                [--requests N (stop after N answers)]
 *                [--timeline FILE (one line per answer: seconds since start
 *                 of its scheduled send, latency in ms)]
 *                body.json...
 *
 * Each body may contain the 14 bytes NONCE_XXXXXXXX, replaced in every
 * request by a fresh hex nonce so event_ids never repeat. Prints one line:
 * BENCH requests=.. rps=.. events_per_s=.. ok=.. other=.. p50_us=.. p90_us=..
 *       p99_us=.. p999_us=.. max_us=..
 * The percentiles come from every answer's latency (all kept and sorted, not
 * bucketed), so p99.9 and max are exact; the timeline shows when a spike
 * happened, which a percentile cannot.
 *
 * Between sends it sleeps in epoll until an answer arrives, a socket that
 * could not take a whole request has room again (EPOLLOUT is watched only
 * then), or the next scheduled send is due (epoll_pwait2: nanoseconds, so the
 * pacing adds no millisecond of its own). Before, every socket was watched
 * for EPOLLOUT all the time, a writable socket is always ready, and each
 * client spun on epoll_wait: one probe at 100 requests/s took 80% of a core
 * (mostly system time) from the server it measured (issue 15).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NONCE "NONCE_XXXXXXXX"
#define NONCE_LEN 14

typedef struct body {
    char *data;
    size_t len;
    size_t *nonce_at;   /* offsets of NONCE in data */
    size_t n_nonce;
} body;

typedef struct conn {
    int fd;
    char *req;          /* the request being sent */
    size_t req_len, sent;
    char resp[65536];
    size_t resp_len;
    int64_t scheduled_ns;
    int64_t next_ns;    /* when to send next (rate mode) */
    int busy;
    int out_watched;    /* EPOLLOUT in the epoll set: part of req waits for room */
} conn;

/* Watches fd for answers, and for room to send only while a request is
 * still partly unsent. */
static void watch(int ep, int fd, uint32_t k, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u), .data.u32 = k};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static body *load_bodies(char **paths, int n)
{
    body *b = calloc((size_t)n, sizeof *b);
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            perror(paths[i]);
            exit(1);
        }
        fseek(f, 0, SEEK_END);
        b[i].len = (size_t)ftell(f);
        rewind(f);
        b[i].data = malloc(b[i].len + 1);
        if (fread(b[i].data, 1, b[i].len, f) != b[i].len)
            exit(1);
        fclose(f);
        b[i].nonce_at = malloc(sizeof(size_t) * (b[i].len / NONCE_LEN + 1));
        for (char *p = b[i].data; (p = memmem(p, b[i].len - (size_t)(p - b[i].data), NONCE, NONCE_LEN));
             p += NONCE_LEN)
            b[i].nonce_at[b[i].n_nonce++] = (size_t)(p - b[i].data);
    }
    return b;
}

static void build_request(conn *c, const char *host, const char *path, const body *b,
                          uint64_t nonce)
{
    char head[512];
    int h = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n", path, host, b->len);
    free(c->req);
    c->req = malloc((size_t)h + b->len);
    memcpy(c->req, head, (size_t)h);
    memcpy(c->req + h, b->data, b->len);
    char tag[NONCE_LEN + 1];
    snprintf(tag, sizeof tag, "%014llx", (unsigned long long)nonce);
    for (size_t i = 0; i < b->n_nonce; i++)
        memcpy(c->req + h + b->nonce_at[i], tag, NONCE_LEN);
    c->req_len = (size_t)h + b->len;
    c->sent = 0;
    c->resp_len = 0;
}

/* Returns the HTTP status once a whole response is in c->resp, 0 if more is
 * needed. Responses are small JSON with Content-Length. */
static int response_complete(conn *c)
{
    c->resp[c->resp_len < sizeof c->resp ? c->resp_len : sizeof c->resp - 1] = '\0';
    char *end = strstr(c->resp, "\r\n\r\n");
    if (!end)
        return 0;
    size_t clen = 0;
    char *cl = strcasestr(c->resp, "\r\ncontent-length:");
    if (cl)
        clen = strtoul(cl + 17, NULL, 10);
    if ((size_t)(end + 4 - c->resp) + clen > c->resp_len)
        return 0;
    return atoi(c->resp + 9);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/api/v1/events";
    int port = 0, nconns = 8;
    double duration = 10, rate = 0;
    long events_per_body = 1;
    unsigned long long max_requests = 0; /* 0 = until --duration */
    const char *timeline = NULL;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc)
            break;
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--path")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--conns")) nconns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--events-per-body")) events_per_body = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--requests")) max_requests = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--timeline")) timeline = argv[i + 1];
        else {
            fprintf(stderr, "bench_client: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!port || i >= argc || nconns < 1) {
        fprintf(stderr, "usage: bench_client --port P [options] body.json...\n");
        return 2;
    }
    int nbodies = argc - i;
    body *bodies = load_bodies(argv + i, nbodies);

    int ep = epoll_create1(0);
    conn *conns = calloc((size_t)nconns, sizeof *conns);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int64_t start = now_ns(), stop = start + (int64_t)(duration * 1e9);
    int64_t interval = rate > 0 ? (int64_t)(1e9 * nconns / rate) : 0;
    for (int k = 0; k < nconns; k++) {
        conns[k].fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(conns[k].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(conns[k].fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("bench_client: connect");
            return 1;
        }
        fcntl(conns[k].fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[k].fd, &ev);
        conns[k].next_ns = start + (interval ? interval * k / nconns : 0);
    }
    size_t lat_cap = 1 << 20, lat_n = 0;
    int64_t *lat = malloc(lat_cap * sizeof *lat);
    /* Send times (scheduled, since start) beside lat, for --timeline. */
    int64_t *at = timeline ? malloc(lat_cap * sizeof *at) : NULL;
    uint64_t nonce = (uint64_t)now_ns(), ok = 0, other = 0, sent_req = 0;
    int64_t t;
    while ((t = now_ns()) < stop && (!max_requests || ok + other < max_requests)) {
        int64_t wake = stop;   /* the next scheduled send of an idle connection */
        for (int k = 0; k < nconns; k++) {
            conn *c = &conns[k];
            if (!c->busy && t >= c->next_ns && (!max_requests || sent_req < max_requests)) {
                build_request(c, host, path, &bodies[sent_req % (uint64_t)nbodies], nonce++);
                c->scheduled_ns = interval ? c->next_ns : t;
                c->next_ns += interval;
                c->busy = 1;
                sent_req++;
            }
            if (c->busy && c->sent < c->req_len) {
                ssize_t w = send(c->fd, c->req + c->sent, c->req_len - c->sent, MSG_NOSIGNAL);
                if (w > 0)
                    c->sent += (size_t)w;
                else if (w < 0 && errno != EAGAIN) {
                    perror("bench_client: send");
                    return 1;
                }
                int want_out = c->sent < c->req_len;
                if (want_out != c->out_watched) {
                    watch(ep, c->fd, (uint32_t)k, want_out);
                    c->out_watched = want_out;
                }
            }
            if (!c->busy && c->next_ns < wake && (!max_requests || sent_req < max_requests))
                wake = c->next_ns;
        }
        struct epoll_event evs[256];
        int64_t left = wake - now_ns();
        struct timespec until = {0, 0};
        if (left > 0) {
            until.tv_sec = (time_t)(left / 1000000000);
            until.tv_nsec = (long)(left % 1000000000);
        }
        int n = epoll_pwait2(ep, evs, 256, &until, NULL);
        for (int e = 0; e < n; e++) {
            conn *c = &conns[evs[e].data.u32];
            if (!(evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;   /* room to send: the loop above sends */
            for (;;) {
                ssize_t r = recv(c->fd, c->resp + c->resp_len, sizeof c->resp - 1 - c->resp_len, 0);
                if (r > 0) {
                    c->resp_len += (size_t)r;
                    continue;
                }
                if (r == 0) {
                    fprintf(stderr, "bench_client: server closed a connection\n");
                    return 1;
                }
                break;
            }
            int status = c->busy && c->sent == c->req_len ? response_complete(c) : 0;
            if (status) {
                int64_t done = now_ns();
                if (lat_n == lat_cap) {
                    lat_cap *= 2;
                    lat = realloc(lat, lat_cap * sizeof *lat);
                    if (at)
                        at = realloc(at, lat_cap * sizeof *at);
                }
                if (at)
                    at[lat_n] = c->scheduled_ns - start;
                lat[lat_n++] = done - c->scheduled_ns;
                if (status >= 200 && status < 300)
                    ok++;
                else
                    other++;
                c->busy = 0;
                if (!interval)
                    c->next_ns = done;
            }
        }
    }
    double secs = (double)(now_ns() - start) / 1e9;
    if (timeline) {
        FILE *tf = fopen(timeline, "w");
        if (!tf) {
            perror(timeline);
            return 1;
        }
        for (size_t k = 0; k < lat_n; k++)
            fprintf(tf, "%.6f %.3f\n", (double)at[k] / 1e9, (double)lat[k] / 1e6);
        fclose(tf);
        free(at);
    }
    qsort(lat, lat_n, sizeof *lat, cmp_i64);
#define PCT(p) (lat_n ? lat[(size_t)((double)(lat_n - 1) * (p))] / 1000 : 0)
    printf("BENCH requests=%zu rps=%.0f events_per_s=%.0f ok=%llu other=%llu p50_us=%lld p90_us=%lld "
           "p99_us=%lld p999_us=%lld max_us=%lld\n",
           lat_n, (double)lat_n / secs, (double)ok * (double)events_per_body / secs,
           (unsigned long long)ok, (unsigned long long)other, (long long)PCT(0.50),
           (long long)PCT(0.90), (long long)PCT(0.99), (long long)PCT(0.999),
           (long long)(lat_n ? lat[lat_n - 1] / 1000 : 0));
    for (int k = 0; k < nconns; k++) {
        close(conns[k].fd);
        free(conns[k].req);
    }
    for (int k = 0; k < nbodies; k++) {
        free(bodies[k].data);
        free(bodies[k].nonce_at);
    }
    free(bodies);
    free(conns);
    free(lat);
    close(ep);
    return 0;
}
