/* ws_drain: the WebSocket clients of benchmark S5 (tests/bench/run.py).
 *
 * Opens N WebSocket connections to 127.0.0.1:PORT (RFC 6455 handshake, no
 * Origin, default subscription: every topic), prints "READY" once all are
 * upgraded, then reads every byte every client is sent until stdin closes
 * (or --duration seconds pass), parsing the frame headers to count
 * messages, and prints
 *   BENCH clients=.. bytes=.. messages=.. closed=.. cpu_s=..
 * (cpu_s: this process's own user + system CPU over the draining).
 *
 * It does the work a real client must do (read every byte off the socket,
 * find each frame's boundary) and nothing more: payloads are not parsed as
 * JSON. It replaces a Python selectors loop that took most of a core for
 * 500 clients and so competed with the server it measured. One thread, one
 * epoll set, level-triggered reads of up to 256 KiB. Pings are answered
 * with pongs (as a browser would). --subscribe TEXT sends TEXT (at most 125
 * bytes, e.g. {"subscribe":["stats"]}) as each client's first message:
 * what the clients take decides what the server computes for them. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

typedef struct conn {
    int fd;
    bool open;
    unsigned char hdr[14];  /* the frame header being read */
    size_t hdr_have;
    size_t hdr_need;        /* 2 until the length field is known */
    uint64_t left;          /* payload bytes of the current frame still to read */
    unsigned opcode;
    bool fin;
    bool ping;              /* the payload being skipped is a ping's */
} conn;

static uint64_t n_messages, n_bytes, n_pings;

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 1000);
            continue;
        }
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A masked, empty pong (clients must mask every frame). */
static void pong(conn *c)
{
    static const unsigned char frame[] = {0x8A, 0x80, 0, 0, 0, 0};
    (void)write_all(c->fd, frame, sizeof frame);
}

/* Sends text as one masked text frame (zero mask: the payload as is). */
static int send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    if (len > 125)
        return -1;
    unsigned char frame[6 + 125] = {0x81, (unsigned char)(0x80 | len), 0, 0, 0, 0};
    memcpy(frame + 6, text, len);
    return write_all(fd, frame, 6 + len);
}

/* Feeds n received bytes through c's frame parser. */
static void feed(conn *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (c->left > 0) {
            size_t take = c->left < n ? (size_t)c->left : n;
            c->left -= take;
            p += take;
            n -= take;
            if (c->left == 0 && c->ping)
                pong(c);
            continue;
        }
        c->hdr[c->hdr_have++] = *p++;
        n--;
        if (c->hdr_have == 2) {
            unsigned len7 = c->hdr[1] & 0x7F;
            c->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (c->hdr[1] & 0x80 ? 4 : 0);
        }
        if (c->hdr_have < 2 || c->hdr_have < c->hdr_need)
            continue;
        /* Header complete. */
        uint64_t len = c->hdr[1] & 0x7F;
        if (len == 126)
            len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
        else if (len == 127) {
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | c->hdr[2 + i];
        }
        c->fin = c->hdr[0] & 0x80;
        c->opcode = c->hdr[0] & 0x0F;
        c->ping = c->opcode == 0x9;
        if (c->fin && c->opcode <= 0x2)
            n_messages++;
        if (c->ping)
            n_pings++;
        c->left = len;
        c->hdr_have = 0;
        c->hdr_need = 2;
        if (len == 0 && c->ping)
            pong(c);
    }
}

/* Connects and upgrades; bytes that came after the 101 response are fed to
 * the parser. Returns the fd or -1. */
static int ws_open(conn *c, uint16_t port, const char *subscribe)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int rl = snprintf(req, sizeof req,
                      "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      (unsigned)port);
    if (write_all(fd, req, (size_t)rl) != 0) {
        close(fd);
        return -1;
    }
    char buf[4096];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (!end && have == sizeof buf - 1) {
            close(fd);
            return -1;
        }
    }
    if (strncmp(buf, "HTTP/1.1 101", 12) != 0 || (subscribe && send_text(fd, subscribe) != 0)) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->open = true;
    c->hdr_need = 2;
    size_t head = (size_t)(end + 4 - buf);
    n_bytes += have - head;
    feed(c, (unsigned char *)buf + head, have - head);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv)
{
    unsigned port = 0, n_clients = 0;
    double duration = 0;
    const char *subscribe = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--clients") == 0)
            n_clients = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--duration") == 0)
            duration = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--subscribe") == 0)
            subscribe = argv[i + 1];
    }
    if (port == 0 || port > 65535 || n_clients == 0) {
        fprintf(stderr, "usage: ws_drain --port P --clients N [--duration S] [--subscribe TEXT]\n"
                        "  drains until stdin closes (or S seconds)\n");
        return 2;
    }
    conn *cs = calloc(n_clients, sizeof *cs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cs || ep < 0)
        return 1;
    for (unsigned i = 0; i < n_clients; i++) {
        if (ws_open(&cs[i], (uint16_t)port, subscribe) < 0) {
            fprintf(stderr, "ws_drain: client %u: connect or upgrade failed\n", i);
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    /* stdin: its EOF (or any line) ends the run. */
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    bool watch_stdin = epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev) == 0;
    printf("READY\n");
    fflush(stdout);

    double cpu0 = cpu_now(), t_end = duration > 0 ? mono_s() + duration : 0;
    uint64_t closed = 0;
    static unsigned char buf[256 * 1024];
    struct epoll_event evs[64];
    for (;;) {
        int timeout = 200;
        if (t_end > 0) {
            double left = t_end - mono_s();
            if (left <= 0)
                break;
            timeout = left < 0.2 ? (int)(left * 1000) + 1 : 200;
        }
        int n = epoll_wait(ep, evs, 64, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        bool done = false;
        for (int k = 0; k < n; k++) {
            conn *c = evs[k].data.ptr;
            if (!c) {
                if (watch_stdin)
                    done = true;
                continue;
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r > 0) {
                n_bytes += (uint64_t)r;
                feed(c, buf, (size_t)r);
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->open = false;
                closed++;
            }
        }
        if (done)
            break;
    }
    double cpu = cpu_now() - cpu0;
    printf("BENCH clients=%u bytes=%llu messages=%llu pings=%llu closed=%llu cpu_s=%.3f\n", n_clients,
           (unsigned long long)n_bytes, (unsigned long long)n_messages,
           (unsigned long long)n_pings, (unsigned long long)closed, cpu);
    for (unsigned i = 0; i < n_clients; i++)
        if (cs[i].open)
            close(cs[i].fd);
    free(cs);
    close(ep);
    return 0;
}
