/* push_client: one WebSocket client of the push hub (see header). */
#include "push_client.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* RFC 6455 7.4.1 close codes. */
#define CLOSE_UNACCEPTABLE_OPCODE 1003
#define CLOSE_POLICY_VIOLATION 1008
#define CLOSE_MESSAGE_TOO_LARGE 1009
#define CLOSE_UNEXPECTED_CONDITION 1011

static const char *const topic_names[CF_TOPIC_COUNT] = {
    [CF_TOPIC_WINDOWS] = "windows",
    [CF_TOPIC_TRENDING] = "trending",
    [CF_TOPIC_SESSIONS] = "sessions",
    [CF_TOPIC_STATS] = "stats",
    [CF_TOPIC_LATE] = "late",
};
#define ALL_TOPICS ((1u << CF_TOPIC_COUNT) - 1u)

struct cf_push_client {
    void *conn;
    pthread_mutex_t *mu;
    size_t headroom;
    cf_push_queue *q;           /* (mu) */
    unsigned topics;            /* (mu) bit per cf_topic */
    char *named;                /* (mu) named topics ("view:NAME"), NUL-separated */
    size_t named_len;           /* (mu) */
    cf_push_client *prev, *next; /* (mu) hub list */
    int close_code;             /* service thread */
    size_t rx_len;
    bool rx_overflow;
    char rx[CF_PUSH_CLIENT_MAX_RX + 1];
};

cf_push_client *cf_push_client_new(void *conn, pthread_mutex_t *mu, size_t queue_cap,
                                   size_t queue_bytes, size_t headroom)
{
    cf_push_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->q = cf_push_queue_new(queue_cap, queue_bytes);
    if (!c->q) {
        free(c);
        return NULL;
    }
    c->conn = conn;
    c->mu = mu;
    c->headroom = headroom;
    c->topics = ALL_TOPICS;
    return c;
}

void cf_push_client_free(cf_push_client *c)
{
    if (!c)
        return;
    cf_push_queue_free(c->q);
    free(c->named);
    free(c);
}

void *cf_push_client_conn(const cf_push_client *c) { return c->conn; }

void cf_push_client_link(cf_push_client **head, cf_push_client *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

void cf_push_client_unlink(cf_push_client **head, cf_push_client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (*head == c)
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

cf_push_client *cf_push_client_next(const cf_push_client *c) { return c->next; }

static bool has_named(const cf_push_client *c, const char *topic)
{
    for (size_t at = 0; at < c->named_len; at += strlen(c->named + at) + 1)
        if (strcmp(c->named + at, topic) == 0)
            return true;
    return false;
}

bool cf_push_client_listens(const cf_push_client *c, const cf_push_audience *to)
{
    if (to->named)
        return c->named && has_named(c, to->named);
    if (to->repair && !(cf_push_queue_lost(c->q) & (1u << to->topic)))
        return false;
    return (c->topics & (1u << to->topic)) != 0;
}

unsigned cf_push_client_topics(const cf_push_client *c) { return c->topics; }

bool cf_push_client_names_any(const cf_push_client *c) { return c->named_len > 0; }

size_t cf_push_client_offer(cf_push_client *c, cf_push_msg *m)
{
    return cf_push_queue_offer(c->q, m);
}

size_t cf_push_client_queued(const cf_push_client *c) { return cf_push_queue_len(c->q); }

size_t cf_push_client_take(cf_push_client *c, cf_push_msg **out, size_t max, size_t budget,
                           bool *ret_more)
{
    size_t n = cf_push_queue_pop_batch(c->q, out, max, budget);
    *ret_more = cf_push_queue_len(c->q) > 0;
    return n;
}

int cf_push_client_close_code(const cf_push_client *c) { return c->close_code; }

/* Queues text for c alone (the subscribe answer). */
static void reply(cf_push_client *c, const char *text, size_t len, cf_push_rx *rx)
{
    cf_push_msg *m = cf_push_msg_new(text, len, c->headroom, false);
    if (!m)
        return;
    pthread_mutex_lock(c->mu);
    rx->dropped += cf_push_queue_offer(c->q, m);
    pthread_mutex_unlock(c->mu);
    cf_push_msg_unref(m);
    rx->queued = true;
}

/* The subscribe answer: {"type": "subscribed", "data": [topics in force]}. */
static void confirm(cf_push_client *c, unsigned topics, const char *named, size_t named_len,
                    cf_push_rx *rx)
{
    cJSON *ack = cJSON_CreateObject();
    cJSON_AddStringToObject(ack, "type", "subscribed");
    cJSON *data = cJSON_AddArrayToObject(ack, "data");
    for (unsigned t = 0; data && t < CF_TOPIC_COUNT; t++)
        if (topics & (1u << t))
            cJSON_AddItemToArray(data, cJSON_CreateString(topic_names[t]));
    for (size_t at = 0; data && at < named_len; at += strlen(named + at) + 1)
        cJSON_AddItemToArray(data, cJSON_CreateString(named + at));
    char *text = data ? cJSON_PrintUnformatted(ack) : NULL;
    cJSON_Delete(ack);
    if (text) {
        reply(c, text, strlen(text), rx);
        cJSON_free(text);
    }
}

/* Applies a "subscribe" array. Returns 0, or a close code. */
static int subscribe(cf_push_client *c, const cJSON *sub, cf_push_rx *rx)
{
    if (!cJSON_IsArray(sub))
        return CLOSE_POLICY_VIOLATION;
    unsigned topics = 0;
    /* Named topics of continuous SQL: view:NAME and stream:NAME (a name
     * need not exist yet: it may be created later). */
    char *named = NULL;
    size_t named_len = 0, n_named = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, sub) {
        if (!cJSON_IsString(it)) {
            free(named);
            return CLOSE_POLICY_VIOLATION;
        }
        const char *name = it->valuestring;
        size_t il = strlen(name);
        bool is_named = (strncmp(name, "view:", 5) == 0 && il > 5) ||
                        (strncmp(name, "stream:", 7) == 0 && il > 7);
        if (is_named && il <= CF_PUSH_MAX_TOPIC && n_named < CF_PUSH_MAX_NAMED) {
            char *g = realloc(named, named_len + il + 1);
            if (!g) {
                free(named);
                return CLOSE_UNEXPECTED_CONDITION;
            }
            named = g;
            memcpy(named + named_len, name, il + 1);
            named_len += il + 1;
            n_named++;
        }
        for (unsigned t = 0; t < CF_TOPIC_COUNT; t++)
            if (strcmp(name, topic_names[t]) == 0)
                topics |= 1u << t;
        if (strcmp(name, "session_end") == 0)
            topics |= 1u << CF_TOPIC_SESSIONS;
    }
    pthread_mutex_lock(c->mu);
    c->topics = topics;
    char *old = c->named;
    c->named = named;
    c->named_len = named_len;
    pthread_mutex_unlock(c->mu);
    free(old);
    rx->subscribed = true;
    /* named stays ours to read: only this thread replaces it. */
    confirm(c, topics, named, named_len, rx);
    return 0;
}

/* Handles one complete text message. Returns 0, or a close code. */
static int handle_message(cf_push_client *c, const char *text, size_t len, cf_push_rx *rx)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
    if (!root)
        return CLOSE_POLICY_VIOLATION;
    int rc = CLOSE_POLICY_VIOLATION;
    if (cJSON_IsObject(root)) {
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(root, "subscribe");
        rc = sub ? subscribe(c, sub, rx) : 0;
    }
    cJSON_Delete(root);
    return rc;
}

cf_push_rx cf_push_client_receive(cf_push_client *c, const void *in, size_t len, bool first,
                                  bool final, bool binary)
{
    cf_push_rx rx = {0};
    if (c->close_code)
        return rx;  /* closing: ignore the rest */
    if (binary) {
        c->close_code = rx.close_code = CLOSE_UNACCEPTABLE_OPCODE;
        return rx;
    }
    if (first) {
        c->rx_len = 0;
        c->rx_overflow = false;
    }
    if (c->rx_overflow || len > CF_PUSH_CLIENT_MAX_RX - c->rx_len) {
        c->rx_overflow = true;
    } else {
        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += len;
    }
    if (!final)
        return rx;
    if (c->rx_overflow) {
        c->close_code = rx.close_code = CLOSE_MESSAGE_TOO_LARGE;
        return rx;
    }
    c->rx[c->rx_len] = '\0';
    c->close_code = rx.close_code = handle_message(c, c->rx, c->rx_len, &rx);
    c->rx_len = 0;
    return rx;
}
