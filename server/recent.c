#include "recent.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cf_buf.h"
#include "zalloc.h"

struct cf_recent_chunk {
    atomic_uint refs;
    uint8_t *bytes;
    size_t len, cap;
    size_t n;
    uint64_t first_seq;
};

/* A ring slot keeps its chunk's event count, size and bytes beside the
 * pointer: the oldest chunk, dropped under the sequencer lock, was written
 * thousands of requests ago and is cold (cf_recent_add was 1% of S1's
 * samples), and the bytes let the drop start loading what the release
 * after the lock touches (drop_oldest). */
typedef struct slot {
    cf_recent_chunk *c;
    uint8_t *bytes;
    size_t n, cap;
} slot;

struct cf_recent {
    size_t capacity, max_bytes;
    slot *ring;                 /* circular, oldest at head */
    size_t slots, head, used;
    size_t events, bytes;
};

cf_recent *cf_recent_new(size_t capacity, size_t max_bytes)
{
    cf_recent *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->capacity = capacity ? capacity : 1;
    r->max_bytes = max_bytes;
    r->slots = 64;
    r->ring = calloc(r->slots, sizeof *r->ring);
    if (!r->ring) {
        free(r);
        return NULL;
    }
    return r;
}

static void unref(cf_recent_chunk *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        free(c->bytes);
        free(c);
    }
}

void cf_recent_free(cf_recent *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->used; i++)
        unref(r->ring[(r->head + i) % r->slots].c);
    free(r->ring);
    free(r);
}

/* One per request: cf_zalloc, since glibc's calloc skips the thread
 * cache (zalloc.h). */
cf_recent_chunk *cf_recent_chunk_new(void) { return cf_zalloc(sizeof(cf_recent_chunk)); }

void cf_recent_chunk_discard(cf_recent_chunk *c) { free(c); }

void cf_recent_unref(cf_recent_chunk *c) { unref(c); }

/* Drops the oldest chunk: into out[*nout] while *nout < cap (the caller
 * releases it later, outside its lock), else released here. */
static void drop_oldest(cf_recent *r, cf_recent_chunk **out, size_t cap, size_t *nout)
{
    slot s = r->ring[r->head];
    r->ring[r->head].c = NULL;
    r->head = (r->head + 1) % r->slots;
    r->used--;
    r->events -= s.n;
    r->bytes -= s.cap;
    if (*nout < cap) {
        /* Released after the caller's lock (cf_recent_unref): the chunk's
         * count and both blocks' allocator headers were cold, a miss each
         * that cf_recent_unref stalled on (1.1% of S1's samples). Loading
         * them now overlaps the misses with the rest of the request. */
        __builtin_prefetch(s.c, 1);
        __builtin_prefetch((const void *)((uintptr_t)s.c - 16), 1);
        if (s.bytes) {
            __builtin_prefetch(s.bytes, 1);
            __builtin_prefetch((const void *)((uintptr_t)s.bytes - 16), 1);
        }
        out[(*nout)++] = s.c;
    } else {
        unref(s.c);
    }
}

void cf_recent_add(cf_recent *r, cf_recent_chunk *c, uint8_t *bytes, size_t len, size_t cap, size_t n,
                   uint64_t first_seq)
{
    (void)cf_recent_add_deferred(r, c, bytes, len, cap, n, first_seq, NULL, 0);
}

size_t cf_recent_add_deferred(cf_recent *r, cf_recent_chunk *c, uint8_t *bytes, size_t len, size_t cap,
                              size_t n, uint64_t first_seq, cf_recent_chunk **dropped, size_t dropped_cap)
{
    size_t nd = 0;
    atomic_init(&c->refs, 1);
    c->bytes = bytes;
    c->len = len;
    c->cap = cap;
    c->n = n;
    c->first_seq = first_seq;
    if (r->used == r->slots) {
        /* Grow (rare: the ring settles at the chunk count its bounds
         * allow); without memory, drop the oldest instead. */
        slot *bigger = calloc(2 * r->slots, sizeof *bigger);
        if (bigger) {
            for (size_t i = 0; i < r->used; i++)
                bigger[i] = r->ring[(r->head + i) % r->slots];
            free(r->ring);
            r->ring = bigger;
            r->slots *= 2;
            r->head = 0;
        } else {
            drop_oldest(r, dropped, dropped_cap, &nd);
        }
    }
    r->ring[(r->head + r->used) % r->slots] = (slot){c, bytes, n, cap};
    r->used++;
    r->events += n;
    r->bytes += cap;
    while (r->used > 1 && (r->events - r->ring[r->head].n >= r->capacity || r->bytes > r->max_bytes))
        drop_oldest(r, dropped, dropped_cap, &nd);
    return nd;
}

size_t cf_recent_count(const cf_recent *r) { return r->events; }

int cf_recent_take(cf_recent *r, size_t limit, cf_recent_chunk ***ret, size_t *ret_n)
{
    size_t k = 0, got = 0;
    while (k < r->used && got < limit)
        got += r->ring[(r->head + r->used - 1 - k++) % r->slots].n;
    cf_recent_chunk **out = malloc((k ? k : 1) * sizeof *out);
    if (!out)
        return -ENOMEM;
    for (size_t i = 0; i < k; i++) {
        out[i] = r->ring[(r->head + r->used - 1 - i) % r->slots].c;
        atomic_fetch_add_explicit(&out[i]->refs, 1, memory_order_relaxed);
    }
    *ret = out;
    *ret_n = k;
    return 0;
}

void cf_recent_chunk_get(const cf_recent_chunk *c, const uint8_t **ret_bytes, size_t *ret_len, size_t *ret_n,
                         uint64_t *ret_first_seq)
{
    *ret_bytes = c->bytes;
    *ret_len = c->len;
    *ret_n = c->n;
    *ret_first_seq = c->first_seq;
}

void cf_recent_release(cf_recent_chunk **chunks, size_t n)
{
    for (size_t i = 0; chunks && i < n; i++)
        unref(chunks[i]);
    free(chunks);
}

/* Adds a string member (bytes need not be NUL-terminated), or null. */
static bool add_str(cJSON *o, const char *name, const char *s, size_t n)
{
    if (!s)
        return cJSON_AddNullToObject(o, name) != NULL;
    char stack[256];
    char *t = n < sizeof stack ? stack : malloc(n + 1);
    if (!t)
        return false;
    memcpy(t, s, n);
    t[n] = '\0';
    bool ok = cJSON_AddStringToObject(o, name, t) != NULL;
    if (t != stack)
        free(t);
    return ok;
}

cJSON *cf_recent_event_json(const cf_event *ev, uint64_t seq)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    size_t name_len;
    const char *name = cf_event_name(ev, &name_len);
    bool ok = cJSON_AddNumberToObject(o, "seq", (double)seq) && add_str(o, "user_id", ev->user_id, ev->user_id_len) &&
              add_str(o, "page_url", ev->page_url, ev->page_url_len) &&
              cJSON_AddNumberToObject(o, "timestamp", (double)ev->ts) && add_str(o, "name", name, name_len) &&
              add_str(o, "element", ev->element, ev->element_len) &&
              add_str(o, "event_id", ev->event_id, ev->event_id_len);
    if (ok) {
        /* properties was printed by cJSON from a validated object. */
        cJSON *p = ev->properties ? cJSON_ParseWithLength(ev->properties, ev->properties_len) : cJSON_CreateNull();
        ok = p && cJSON_AddItemToObject(o, "properties", p);
        if (p && !ok)
            cJSON_Delete(p);
    }
    const cf_event_enrich *en = &ev->enrich;
    for (int c = 0; ok && c < CF_COL_COUNT; c++)
        ok = add_str(o, cf_enrich_col_name(c), en->col[c], en->len[c]);
    if (ok) {
        const char *d = cf_event_device_name(en->device);
        ok = add_str(o, "device", d, d ? strlen(d) : 0) && cJSON_AddBoolToObject(o, "is_bot", en->is_bot);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cf_recent_json(cf_recent_chunk *const *chunks, size_t n, size_t limit)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *items = root ? cJSON_AddArrayToObject(root, "items") : NULL;
    if (!items) {
        cJSON_Delete(root);
        return NULL;
    }
    size_t done = 0;
    cf_event *evs = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < n && done < limit; i++) {
        const cf_recent_chunk *c = chunks[i];
        if (c->n > cap) {
            free(evs);
            cap = c->n;
            evs = malloc(cap * sizeof *evs);
            if (!evs)
                goto fail;
        }
        cf_reader rd;
        cf_reader_init(&rd, c->bytes, c->len);
        size_t k = 0;
        while (k < c->n && cf_event_unpack(&rd, &evs[k]) == 0)
            k++;
        /* Newest first: the chunk holds its events in arrival order. */
        while (k > 0 && done < limit) {
            k--;
            cJSON *e = cf_recent_event_json(&evs[k], c->first_seq + k);
            if (!e || !cJSON_AddItemToArray(items, e)) {
                cJSON_Delete(e);
                goto fail;
            }
            done++;
        }
    }
    free(evs);
    return root;
fail:
    free(evs);
    cJSON_Delete(root);
    return NULL;
}
