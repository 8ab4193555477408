/* push_queue: bounded per-client queue with the interim-first drop policy
 * described in push_queue.h. A ring of message pointers. */
#include "push_queue.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cf_push_queue {
    size_t cap;
    size_t cap_bytes;
    size_t bytes;       /* payload bytes queued */
    size_t head;        /* index of the oldest message */
    size_t len;
    size_t n_interim;
    unsigned lost;      /* state bits whose latest message was dropped */
    cf_push_msg *ring[];
};

cf_push_msg *cf_push_msg_new(const char *data, size_t len, size_t headroom, bool interim)
{
    if (len > SIZE_MAX - sizeof(cf_push_msg) - headroom - 1)
        return NULL;
    cf_push_msg *m = malloc(sizeof *m + headroom + len + 1);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->interim = interim;
    m->state = 0;
    m->len = len;
    m->headroom = headroom;
    if (len)
        memcpy(m->buf + headroom, data, len);
    m->buf[headroom + len] = '\0';
    return m;
}

void cf_push_msg_ref(cf_push_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void cf_push_msg_unref(cf_push_msg *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

cf_push_queue *cf_push_queue_new(size_t cap, size_t cap_bytes)
{
    if (cap == 0 || cap > (SIZE_MAX - sizeof(cf_push_queue)) / sizeof(cf_push_msg *))
        return NULL;
    cf_push_queue *q = calloc(1, sizeof *q + cap * sizeof(cf_push_msg *));
    if (q) {
        q->cap = cap;
        q->cap_bytes = cap_bytes;
    }
    return q;
}

void cf_push_queue_free(cf_push_queue *q)
{
    if (!q)
        return;
    cf_push_msg *m;
    while ((m = cf_push_queue_pop(q)))
        cf_push_msg_unref(m);
    free(q);
}

static size_t slot(const cf_push_queue *q, size_t i) { return (q->head + i) % q->cap; }

/* Removes the message at logical position i (0 = oldest), unrefs it and
 * closes the gap by moving the older ones up one place; returns its state
 * bits. O(i). */
static unsigned remove_at(cf_push_queue *q, size_t i)
{
    cf_push_msg *m = q->ring[slot(q, i)];
    for (size_t k = i; k > 0; k--)
        q->ring[slot(q, k)] = q->ring[slot(q, k - 1)];
    q->ring[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    q->len--;
    q->bytes -= m->len;
    if (m->interim)
        q->n_interim--;
    unsigned state = m->state;
    cf_push_msg_unref(m);
    return state;
}

/* The state bits of the messages queued. O(len). */
static unsigned held_states(const cf_push_queue *q)
{
    unsigned held = 0;
    for (size_t i = 0; i < q->len; i++)
        held |= q->ring[slot(q, i)]->state;
    return held;
}

/* Evictions remove the oldest messages of their kind, so a message still
 * queued with an evicted one's bit is a later state: only bits no longer
 * held are lost. O(len) when something was evicted with a bit. */
static void note_lost(cf_push_queue *q, unsigned evicted)
{
    if (evicted)
        q->lost |= evicted & ~held_states(q);
}

/* Logical position of the oldest interim message; call only when n_interim > 0. */
static size_t oldest_interim(const cf_push_queue *q)
{
    size_t i = 0;
    while (!q->ring[slot(q, i)]->interim)
        i++;
    return i;
}

/* True when m cannot join q as it is: full in messages, or over the byte
 * bound. Call only with m->len <= q->cap_bytes. */
static bool no_room(const cf_push_queue *q, const cf_push_msg *m)
{
    return q->len == q->cap || q->bytes > q->cap_bytes - m->len;
}

size_t cf_push_queue_offer(cf_push_queue *q, cf_push_msg *m)
{
    if (m->len > q->cap_bytes) {
        q->lost |= m->state;
        return 1;   /* could never fit: refused, the queue left as it is */
    }
    size_t dropped = 0;
    unsigned evicted = 0;
    while (no_room(q, m)) {
        if (q->n_interim > 0) {
            evicted |= remove_at(q, oldest_interim(q));
        } else if (m->interim) {
            /* Only final messages queued: refuse the new interim one. */
            note_lost(q, evicted);
            q->lost |= m->state;
            return dropped + 1;
        } else {
            evicted |= remove_at(q, 0);
        }
        dropped++;
    }
    note_lost(q, evicted);
    q->lost &= ~m->state;   /* m is the latest state of its bit */
    cf_push_msg_ref(m);
    q->ring[slot(q, q->len)] = m;
    q->len++;
    q->bytes += m->len;
    if (m->interim)
        q->n_interim++;
    return dropped;
}

cf_push_msg *cf_push_queue_pop(cf_push_queue *q)
{
    if (q->len == 0)
        return NULL;
    cf_push_msg *m = q->ring[q->head];
    q->ring[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    q->len--;
    q->bytes -= m->len;
    if (m->interim)
        q->n_interim--;
    return m;
}

size_t cf_push_queue_len(const cf_push_queue *q) { return q->len; }

size_t cf_push_queue_interim(const cf_push_queue *q) { return q->n_interim; }

size_t cf_push_queue_bytes(const cf_push_queue *q) { return q->bytes; }

unsigned cf_push_queue_lost(const cf_push_queue *q) { return q->lost; }

size_t cf_push_frame_header_len(size_t len)
{
    return len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;
}

size_t cf_push_frame_header(unsigned char *out, size_t len)
{
    out[0] = 0x81;  /* FIN, text */
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

size_t cf_push_queue_pop_batch(cf_push_queue *q, cf_push_msg **out, size_t max, size_t budget)
{
    size_t n = 0, bytes = 0;
    while (n < max && q->len > 0) {
        const cf_push_msg *m = q->ring[q->head];
        size_t framed = cf_push_frame_header_len(m->len) + m->len;
        if (n > 0 && (framed > budget || bytes > budget - framed))
            break;
        bytes += framed;
        out[n++] = cf_push_queue_pop(q);
    }
    return n;
}
