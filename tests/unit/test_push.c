/* Unit tests for push: the WebSocket hub on a free loopback port, driven by
 * raw TCP clients that speak just enough WebSocket (RFC 6455) from here:
 * delivery, subscribe filtering, client message errors, Origin and token
 * checks, the client bound, and a client that never reads while another
 * keeps receiving (drops counted). Waits use deadlines on conditions, never
 * sleeps. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "push.h"

#define DEADLINE_MS 5000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void base_config(cf_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->bind, sizeof cfg->bind, "127.0.0.1");
    cfg->ws_port = free_port();
    cfg->ws_queue = 16;
    cfg->ws_queue_bytes = (size_t)1 << 20;
    cfg->ws_max_clients = 100;
}

static cf_push *start(const cf_config *cfg)
{
    const char *err = NULL;
    cf_push *p = cf_push_start(cfg, &err);
    if (!p)
        fail_msg("cf_push_start: %s", err);
    return p;
}

/* The sent counter moves after lws_write returns, which may be after the
 * client already read the frame: wait for it instead of racing it. */
static void wait_sent(cf_push *p, uint64_t n)
{
    int64_t end = now_ms() + DEADLINE_MS;
    while (cf_push_sent(p) < n) {
        if (now_ms() > end)
            fail_msg("expected %llu sent, have %llu", (unsigned long long)n,
                     (unsigned long long)cf_push_sent(p));
        poll(NULL, 0, 1);   /* yield while polling a condition */
    }
}

/* Waits until the hub counts n clients. */
static void wait_clients(cf_push *p, size_t n)
{
    int64_t end = now_ms() + DEADLINE_MS;
    while (cf_push_clients(p) != n) {
        if (now_ms() > end)
            fail_msg("expected %zu clients, have %zu", n, cf_push_clients(p));
        poll(NULL, 0, 1);   /* yield while polling a condition */
    }
}

/* ---- a minimal WebSocket client ----------------------------------------- */

typedef struct wsc {
    int fd;
    unsigned char buf[1 << 16];
    size_t len;
} wsc;

/* Reads more bytes into c->buf before the deadline; false on EOF/timeout. */
static bool fill(wsc *c, int64_t end)
{
    if (c->len == sizeof c->buf)
        return false;
    int64_t left = end - now_ms();
    if (left <= 0)
        return false;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)left) <= 0)
        return false;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0)
        return false;
    c->len += (size_t)n;
    return true;
}

static void consume(wsc *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Connects and sends the handshake with optional extra header lines. Returns
 * the HTTP status of the answer (101 on success), or -1 when the server
 * closed the connection without one. *ret_c is set on 101 only. */
static int ws_connect(uint16_t port, const char *path, const char *extra, int rcvbuf, wsc **ret_c)
{
    wsc *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, port, extra ? extra : "");
    assert_int_equal(send(c->fd, req, (size_t)n, MSG_NOSIGNAL), n);
    int64_t end = now_ms() + DEADLINE_MS;
    int status = -1;
    for (;;) {
        unsigned char *hdr_end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (hdr_end) {
            if (sscanf((const char *)c->buf, "HTTP/1.1 %d", &status) != 1)
                status = 0;
            if (status == 101)
                assert_non_null(memmem(c->buf, (size_t)(hdr_end - c->buf),
                                       "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28));
            consume(c, (size_t)(hdr_end + 4 - c->buf));
            break;
        }
        if (!fill(c, end))
            break;
    }
    if (status == 101) {
        *ret_c = c;
    } else {
        close(c->fd);
        free(c);
    }
    return status;
}

static wsc *ws_open(uint16_t port)
{
    wsc *c = NULL;
    assert_int_equal(ws_connect(port, "/", NULL, 0, &c), 101);
    return c;
}

static void ws_close(wsc *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c);
}

/* Sends one masked frame (opcode 1 text, 2 binary). */
static void ws_send(wsc *c, int opcode, const char *data, size_t len)
{
    unsigned char *f = malloc(len + 14);
    assert_non_null(f);
    size_t h = 0;
    f[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        f[h++] = (unsigned char)(0x80 | len);
    } else {
        assert_true(len <= 0xffff);
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(len >> 8);
        f[h++] = (unsigned char)len;
    }
    const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(f + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        f[h + i] = (unsigned char)data[i] ^ mask[i % 4];
    assert_int_equal(send(c->fd, f, h + len, MSG_NOSIGNAL), (ssize_t)(h + len));
    free(f);
}

/* Receives one whole frame (the server never fragments ours). Returns the
 * malloc'd payload, NUL-terminated, and its opcode; NULL on EOF/timeout. */
static char *ws_recv(wsc *c, int *ret_opcode, size_t *ret_len)
{
    int64_t end = now_ms() + DEADLINE_MS;
    for (;;) {
        if (c->len >= 2) {
            size_t h = 2;
            uint64_t n = c->buf[1] & 0x7f;
            if (n == 126 && c->len >= 4) {
                n = ((uint64_t)c->buf[2] << 8) | c->buf[3];
                h = 4;
            } else if (n == 127 && c->len >= 10) {
                n = 0;
                for (int i = 0; i < 8; i++)
                    n = (n << 8) | c->buf[2 + i];
                h = 10;
            } else if (n >= 126) {
                h = 0;  /* length not complete yet */
            }
            assert_true(n < 1u << 24);
            if (h && c->len >= h) {
                char *out = malloc(n + 1);
                assert_non_null(out);
                size_t have = 0;
                int opcode = c->buf[0] & 0x0f;
                consume(c, h);
                while (have < n) {
                    if (c->len == 0 && !fill(c, end)) {
                        free(out);
                        return NULL;
                    }
                    size_t take = c->len < n - have ? c->len : (size_t)(n - have);
                    memcpy(out + have, c->buf, take);
                    consume(c, take);
                    have += take;
                }
                out[n] = '\0';
                if (ret_opcode)
                    *ret_opcode = opcode;
                if (ret_len)
                    *ret_len = (size_t)n;
                return out;
            }
        }
        if (!fill(c, end))
            return NULL;
    }
}

/* Receives the next text message and checks it equals want. */
static void expect_text(wsc *c, const char *want)
{
    int op = 0;
    char *got = ws_recv(c, &op, NULL);
    if (!got)
        fail_msg("no message, expected %s", want);
    assert_int_equal(op, 1);
    assert_string_equal(got, want);
    free(got);
}

/* Expects a close frame carrying code. */
static void expect_close(wsc *c, int code)
{
    int op = 0;
    size_t len = 0;
    char *got = ws_recv(c, &op, &len);
    assert_non_null(got);
    assert_int_equal(op, 8);
    assert_true(len >= 2);
    assert_int_equal(((unsigned char)got[0] << 8) | (unsigned char)got[1], code);
    free(got);
}

static void publish(cf_push *p, cf_topic t, const char *msg, bool interim)
{
    cf_push_publish(p, t, msg, strlen(msg), interim);
}

/* ---- tests -------------------------------------------------------------- */

static void delivers_to_every_client(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);
    publish(p, CF_TOPIC_STATS, "{\"type\":\"stats\",\"data\":0}", false); /* nobody: no-op */
    wsc *a = ws_open(cfg.ws_port);
    wsc *b = NULL;
    assert_int_equal(ws_connect(cfg.ws_port, "/any/path?x=1", NULL, 0, &b), 101);
    wait_clients(p, 2);
    const char *msg = "{\"type\":\"windows\",\"data\":[]}";
    publish(p, CF_TOPIC_WINDOWS, msg, true);
    publish(p, CF_TOPIC_STATS, "{\"type\":\"stats\",\"data\":1}", false);
    expect_text(a, msg);
    expect_text(b, msg);
    expect_text(a, "{\"type\":\"stats\",\"data\":1}");
    expect_text(b, "{\"type\":\"stats\",\"data\":1}");
    wait_sent(p, 4);
    assert_int_equal(cf_push_sent(p), 4);
    assert_int_equal(cf_push_dropped(p), 0);

    /* A larger message crosses the 16-bit length boundary intact. */
    size_t big = 70000;
    char *text = malloc(big + 1);
    assert_non_null(text);
    memset(text, 'x', big);
    text[big] = '\0';
    cf_push_publish(p, CF_TOPIC_LATE, text, big, false);
    size_t len = 0;
    char *got = ws_recv(a, NULL, &len);
    assert_non_null(got);
    assert_int_equal(len, big);
    assert_memory_equal(got, text, big);
    free(got);
    free(text);

    ws_close(a);
    wait_clients(p, 1);
    ws_close(b);
    wait_clients(p, 0);
    cf_push_stop(p);
    cf_push_stop(NULL);
}

static void subscribe_filters_topics(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);
    wsc *a = ws_open(cfg.ws_port), *all = ws_open(cfg.ws_port);
    wait_clients(p, 2);
    const char *sub = "{\"subscribe\":[\"stats\",\"session_end\",\"nonsense\"]}";
    ws_send(a, 1, sub, strlen(sub));
    expect_text(a, "{\"type\":\"subscribed\",\"data\":[\"sessions\",\"stats\"]}");

    publish(p, CF_TOPIC_WINDOWS, "W", true);
    publish(p, CF_TOPIC_TRENDING, "T", false);
    publish(p, CF_TOPIC_LATE, "L", false);
    publish(p, CF_TOPIC_SESSIONS, "S", false);
    publish(p, CF_TOPIC_STATS, "X", false);
    expect_text(a, "S");
    expect_text(a, "X");
    expect_text(all, "W");
    expect_text(all, "T");
    expect_text(all, "L");
    expect_text(all, "S");
    expect_text(all, "X");

    /* An empty list unsubscribes from everything. */
    ws_send(a, 1, "{\"subscribe\":[]}", 16);
    expect_text(a, "{\"type\":\"subscribed\",\"data\":[]}");
    /* Objects without "subscribe" are ignored. */
    ws_send(a, 1, "{\"hello\":1}", 11);
    ws_send(a, 1, "{\"subscribe\":[\"late\"]}", 22);
    expect_text(a, "{\"type\":\"subscribed\",\"data\":[\"late\"]}");
    publish(p, CF_TOPIC_STATS, "X2", false);
    publish(p, CF_TOPIC_LATE, "L2", false);
    expect_text(a, "L2");
    expect_text(all, "X2");
    expect_text(all, "L2");

    ws_close(a);
    ws_close(all);
    cf_push_stop(p);
}

static void bad_client_messages_close(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);

    wsc *c = ws_open(cfg.ws_port);
    ws_send(c, 1, "not json", 8);
    expect_close(c, 1008);
    ws_close(c);

    c = ws_open(cfg.ws_port);
    ws_send(c, 1, "{\"subscribe\":\"stats\"}", 21);
    expect_close(c, 1008);
    ws_close(c);

    c = ws_open(cfg.ws_port);
    ws_send(c, 1, "{\"subscribe\":[1]}", 17);
    expect_close(c, 1008);
    ws_close(c);

    c = ws_open(cfg.ws_port);
    ws_send(c, 2, "{}", 2);
    expect_close(c, 1003);
    ws_close(c);

    /* 4096 bytes is the bound: one more closes with 1009. */
    c = ws_open(cfg.ws_port);
    char *big = malloc(4097);
    assert_non_null(big);
    memset(big, ' ', 4097);
    memcpy(big, "{\"subscribe\":[\"stats\"]", 22);
    big[4095] = '}';
    ws_send(c, 1, big, 4096);
    expect_text(c, "{\"type\":\"subscribed\",\"data\":[\"stats\"]}");
    big[4095] = ' ';
    big[4096] = '}';
    ws_send(c, 1, big, 4097);
    expect_close(c, 1009);
    free(big);
    ws_close(c);

    wait_clients(p, 0);
    cf_push_stop(p);
}

static int try_connect(uint16_t port, const char *path, const char *extra)
{
    wsc *c = NULL;
    int status = ws_connect(port, path, extra, 0, &c);
    ws_close(c);
    return status;
}

static void origin_checks(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);
    /* No list: no Origin (non-browser) or the same host on any port only. */
    assert_int_equal(try_connect(cfg.ws_port, "/", NULL), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Origin: http://127.0.0.1:8080\r\n"), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Origin: http://127.0.0.1\r\n"), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", "Origin: http://evil.example\r\n"), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", "Origin: http://127.0.0.10:8080\r\n"), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", "Origin: null\r\n"), 101);
    cf_push_stop(p);

    base_config(&cfg);
    snprintf(cfg.cors_origins[0], sizeof cfg.cors_origins[0], "https://app.example.com");
    cfg.n_cors_origins = 1;
    p = start(&cfg);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Origin: https://app.example.com\r\n"), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Origin: https://APP.example.com/\r\n"), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Origin: http://127.0.0.1:8080\r\n"), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", "Origin: http://app.example.com\r\n"), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", "Origin: https://app.example.com.evil\r\n"), 101);
    cf_push_stop(p);

    base_config(&cfg);
    snprintf(cfg.cors_origins[0], sizeof cfg.cors_origins[0], "*");
    cfg.n_cors_origins = 1;
    p = start(&cfg);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Origin: http://evil.example\r\n"), 101);
    cf_push_stop(p);
}

static void read_token_required(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    snprintf(cfg.read_token, sizeof cfg.read_token, "s3cret");
    cf_push *p = start(&cfg);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", NULL), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/?token=wrong", NULL), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/?token=s3cre", NULL), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/?token=s3cretX", NULL), 101);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", "Authorization: Bearer nope\r\n"), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/?token=s3cret", NULL), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/?a=1&token=s3cret", NULL), 101);
    assert_int_equal(try_connect(cfg.ws_port, "/", "Authorization: Bearer s3cret\r\n"), 101);
    cf_push_stop(p);
}

static void client_limit(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cfg.ws_max_clients = 2;
    cf_push *p = start(&cfg);
    wsc *a = ws_open(cfg.ws_port), *b = ws_open(cfg.ws_port);
    wait_clients(p, 2);
    assert_int_not_equal(try_connect(cfg.ws_port, "/", NULL), 101);
    ws_close(a);
    wait_clients(p, 1);
    assert_int_equal(try_connect(cfg.ws_port, "/", NULL), 101);
    ws_close(b);
    cf_push_stop(p);
}

/* A client that never reads fills its kernel buffers and then its queue of
 * 8; from then on its messages are dropped and counted, while the reading
 * client gets every message, each before the next is published. */
static void slow_client_does_not_block_others(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cfg.ws_queue = 8;
    cf_push *p = start(&cfg);
    wsc *stuck = NULL;
    assert_int_equal(ws_connect(cfg.ws_port, "/", NULL, 4096, &stuck), 101);
    wsc *reader = ws_open(cfg.ws_port);
    wait_clients(p, 2);

    enum { N = 400, SIZE = 64 * 1024 };
    char *msg = malloc(SIZE + 1);
    assert_non_null(msg);
    memset(msg, 'a', SIZE);
    msg[SIZE] = '\0';
    for (int i = 0; i < N; i++) {
        int n = snprintf(msg, 16, "%08d", i);
        msg[n] = ' ';
        cf_push_publish(p, CF_TOPIC_WINDOWS, msg, SIZE, true);
        size_t len = 0;
        char *got = ws_recv(reader, NULL, &len);
        if (!got)
            fail_msg("reader starved at message %d", i);
        assert_int_equal(len, SIZE);
        assert_memory_equal(got, msg, SIZE);
        free(got);
    }
    free(msg);
    /* 400 x 64 KiB = 25 MiB cannot all sit in the stuck client's socket
     * buffers plus its queue of 8: the rest was dropped, and counted. */
    uint64_t dropped = cf_push_dropped(p);
    assert_true(dropped > 0);
    assert_true(dropped < N);
    wait_sent(p, N);
    assert_int_equal(cf_push_clients(p), 2);
    ws_close(stuck);
    ws_close(reader);
    cf_push_stop(p);
}

/* Messages that pile up while a client is not reading go out coalesced,
 * several frames per write and the write cut by a small receive buffer:
 * every one still arrives whole, in order, none dropped, lengths across
 * the 7- and 16-bit encodings. */
static void queued_messages_arrive_whole_and_in_order(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cfg.ws_queue = 256;
    cf_push *p = start(&cfg);
    wsc *c = NULL;
    assert_int_equal(ws_connect(cfg.ws_port, "/", NULL, 4096, &c), 101);
    wait_clients(p, 1);

    enum { N = 120 };
    static const size_t sizes[] = {20, 300, 9000};
    char *msg = malloc(9001);
    assert_non_null(msg);
    for (int i = 0; i < N; i++) {
        size_t len = sizes[i % 3];
        memset(msg, 'a' + i % 26, len);
        snprintf(msg, 16, "%08d", i);
        msg[8] = ' ';
        cf_push_publish(p, CF_TOPIC_STATS, msg, len, false);
    }
    for (int i = 0; i < N; i++) {
        size_t want = sizes[i % 3], len = 0;
        memset(msg, 'a' + i % 26, want);
        snprintf(msg, 16, "%08d", i);
        msg[8] = ' ';
        int op = 0;
        char *got = ws_recv(c, &op, &len);
        if (!got)
            fail_msg("message %d missing", i);
        assert_int_equal(op, 1);
        assert_int_equal(len, want);
        assert_memory_equal(got, msg, want);
        free(got);
    }
    free(msg);
    wait_sent(p, N);
    assert_int_equal(cf_push_dropped(p), 0);
    ws_close(c);
    cf_push_stop(p);
}

static void plain_http_and_bad_bind(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);
    /* A plain HTTP request to the WebSocket port gets an answer, not a hang. */
    wsc c = {0};
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(cfg.ws_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c.fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(c.fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    int64_t end = now_ms() + DEADLINE_MS;
    while (c.len < 12 && fill(&c, end))
        ;
    assert_true(c.len >= 12);
    assert_memory_equal(c.buf, "HTTP/1.1 404", 12);
    close(c.fd);

    /* The same port twice: the second start fails with a message. */
    const char *err = NULL;
    cf_push *again = cf_push_start(&cfg, &err);
    assert_null(again);
    assert_non_null(err);
    cf_push_stop(p);
}

/* Two clients: a on every built-in topic (the default), b on "stats"
 * only, its subscription answered and sent. */
static void open_all_and_stats(const cf_config *cfg, cf_push *p, wsc **ret_a, wsc **ret_b)
{
    *ret_a = ws_open(cfg->ws_port);
    *ret_b = ws_open(cfg->ws_port);
    wait_clients(p, 2);
    const char *sub = "{\"subscribe\":[\"stats\"]}";
    ws_send(*ret_b, 1, sub, strlen(sub));
    expect_text(*ret_b, "{\"type\":\"subscribed\",\"data\":[\"stats\"]}");
    wait_sent(p, 1);
}

/* A group (the ticker's windows, trending and stats of one tick) wakes the
 * service thread once and reaches a client in one write; the same messages
 * published one by one wake it once each. */
static void group_is_one_wake_and_one_write(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);
    wsc *a, *b;
    open_all_and_stats(&cfg, p, &a, &b);
    const char *w = "{\"type\":\"windows\",\"data\":[]}";
    const char *t = "{\"type\":\"trending\",\"data\":{}}";
    const char *st = "{\"type\":\"stats\",\"data\":2}";
    cf_push_item items[3] = {
        {.topic = CF_TOPIC_WINDOWS, .msg = w, .len = strlen(w), .interim = true},
        {.topic = CF_TOPIC_TRENDING, .msg = t, .len = strlen(t), .interim = false},
        {.topic = CF_TOPIC_STATS, .msg = st, .len = strlen(st), .interim = true},
    };
    uint64_t wakes = cf_push_wakes(p), writes = cf_push_writes(p);
    cf_push_publish_group(p, items, 3);
    assert_int_equal(cf_push_wakes(p), wakes + 1);
    expect_text(a, w);
    expect_text(a, t);
    expect_text(a, st);
    expect_text(b, st);
    wait_sent(p, 1 + 4);
    /* Queued under one lock before the one wake-up: one write per client. */
    assert_int_equal(cf_push_writes(p), writes + 2);

    for (size_t i = 0; i < 3; i++)
        cf_push_publish(p, items[i].topic, items[i].msg, items[i].len, items[i].interim);
    assert_int_equal(cf_push_wakes(p), wakes + 4);
    expect_text(a, w);
    expect_text(a, t);
    expect_text(a, st);
    expect_text(b, st);
    assert_int_equal(cf_push_dropped(p), 0);
    ws_close(a);
    ws_close(b);
    wait_clients(p, 0);
    cf_push_stop(p);
}

/* A state message (interim windows) that a client's queue refused leaves
 * that client marked; a repair message goes to marked clients only, and
 * clears the mark. */
static void repair_goes_only_to_clients_that_lost_the_state(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cfg.ws_queue_bytes = 64;
    cf_push *p = start(&cfg);
    wsc *a, *b;
    open_all_and_stats(&cfg, p, &a, &b);

    /* Over a's byte bound: refused, so a lost the windows state; b does
     * not take windows yet. */
    char big[100];
    memset(big, 'x', sizeof big);
    cf_push_item lost = {.topic = CF_TOPIC_WINDOWS, .msg = big, .len = sizeof big,
                         .interim = true, .state = true};
    cf_push_publish_group(p, &lost, 1);
    assert_int_equal(cf_push_dropped(p), 1);
    const char *sub = "{\"subscribe\":[\"windows\",\"stats\"]}";
    ws_send(b, 1, sub, strlen(sub));
    expect_text(b, "{\"type\":\"subscribed\",\"data\":[\"windows\",\"stats\"]}");
    wait_sent(p, 2);

    const char *w = "{\"type\":\"windows\",\"data\":[]}";
    const char *st = "{\"type\":\"stats\",\"data\":1}";
    cf_push_item repair = {.topic = CF_TOPIC_WINDOWS, .msg = w, .len = strlen(w),
                           .interim = true, .state = true, .repair = true};
    cf_push_publish_group(p, &repair, 1);
    publish(p, CF_TOPIC_STATS, st, true);
    expect_text(a, w);
    expect_text(a, st);
    expect_text(b, st);     /* b had the state: no repair for it */
    wait_sent(p, 2 + 3);

    /* a has the state again: a second repair goes to nobody. */
    uint64_t wakes = cf_push_wakes(p);
    cf_push_publish_group(p, &repair, 1);
    assert_int_equal(cf_push_wakes(p), wakes);
    assert_int_equal(cf_push_dropped(p), 1);
    ws_close(a);
    ws_close(b);
    wait_clients(p, 0);
    cf_push_stop(p);
}

/* The hub counts the listeners of each topic as clients come, subscribe
 * and go, so publishers render only what someone takes. */
static void listeners_follow_subscriptions(void **state)
{
    (void)state;
    cf_config cfg;
    base_config(&cfg);
    cf_push *p = start(&cfg);
    assert_false(cf_push_listened(p, CF_TOPIC_STATS));
    assert_false(cf_push_listened_named(p));
    assert_false(cf_push_listened(NULL, CF_TOPIC_STATS));
    wsc *a = ws_open(cfg.ws_port);
    wait_clients(p, 1);
    for (int t = 0; t < CF_TOPIC_COUNT; t++)
        assert_true(cf_push_listened(p, (cf_topic)t));
    assert_false(cf_push_listened_named(p));
    const char *sub = "{\"subscribe\":[\"stats\",\"view:v1\"]}";
    ws_send(a, 1, sub, strlen(sub));
    expect_text(a, "{\"type\":\"subscribed\",\"data\":[\"stats\",\"view:v1\"]}");
    assert_true(cf_push_listened(p, CF_TOPIC_STATS));
    assert_false(cf_push_listened(p, CF_TOPIC_WINDOWS));
    assert_false(cf_push_listened(p, CF_TOPIC_LATE));
    assert_true(cf_push_listened_named(p));
    wsc *b = ws_open(cfg.ws_port);
    wait_clients(p, 2);
    assert_true(cf_push_listened(p, CF_TOPIC_WINDOWS));
    ws_close(b);
    wait_clients(p, 1);
    assert_false(cf_push_listened(p, CF_TOPIC_WINDOWS));
    ws_close(a);
    wait_clients(p, 0);
    assert_false(cf_push_listened(p, CF_TOPIC_STATS));
    assert_false(cf_push_listened_named(p));
    cf_push_stop(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delivers_to_every_client),
        cmocka_unit_test(group_is_one_wake_and_one_write),
        cmocka_unit_test(repair_goes_only_to_clients_that_lost_the_state),
        cmocka_unit_test(listeners_follow_subscriptions),
        cmocka_unit_test(subscribe_filters_topics),
        cmocka_unit_test(bad_client_messages_close),
        cmocka_unit_test(origin_checks),
        cmocka_unit_test(read_token_required),
        cmocka_unit_test(client_limit),
        cmocka_unit_test(slow_client_does_not_block_others),
        cmocka_unit_test(queued_messages_arrive_whole_and_in_order),
        cmocka_unit_test(plain_http_and_bad_bind),
    };
    return cmocka_run_group_tests_name("push", tests, NULL, NULL);
}
