/* cf_join: stream-stream interval join and stream-table join (see
 * cf_join.h for the contracts).
 *
 * Interval join layout. A hash map (open addressing, linear probing,
 * backward-shift deletion) from key to a bucket holding two doubly linked
 * lists of buffered records, one per side, in arrival order. A new record
 * walks the other side's list of its key, emits the pairs within the window,
 * then is appended to its own side. Every buffered record also sits in one
 * min-heap ordered by ts, so the watermark frees expired records by popping
 * the heap: no scan of live state, no wall-clock timer.
 *
 * Why a pair is emitted exactly once: it is emitted when its second record
 * arrives, by that record's probe, and never again (buffered records do not
 * probe). It is never missed: a record that is not late has ts >= W - L (L
 * the allowed lateness), so any partner has ts' >= ts - window >= W - L -
 * window, i.e. ts' + window + L >= W: the partner has not been expired. */
#include "cf_join.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_time.h"

#define JOIN_SEED 0x6a6f696eu /* "join" */
#define MAP_MIN_CAP 16u
/* Windows and lateness up to 2^62 ms keep every bound below in int64. */
#define DURATION_MAX ((int64_t)1 << 62)

/* ---- byte-keyed hash map shared by both joins ---------------------------- */

typedef struct map_entry {
    char *key;       /* owned; NULL marks an empty slot */
    void *val;       /* owned by the user of the map */
    size_t val_len;
    uint32_t key_len;
    uint32_t hash;   /* low bits of cf_hash64, enough for the slot index */
} map_entry;

typedef struct map {
    map_entry *e;
    size_t cap;      /* power of two or 0 */
    size_t count;
} map;

static uint32_t key_hash(const void *k, size_t n) { return (uint32_t)cf_hash64(k, n, JOIN_SEED); }

/* Slot of the key or the empty slot where it would go; requires cap > count. */
static size_t map_slot(const map *m, const void *k, size_t n, uint32_t h)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->e[i].key) {
        const map_entry *e = &m->e[i];
        if (e->hash == h && e->key_len == n && (n == 0 || memcmp(e->key, k, n) == 0))
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static map_entry *map_find(const map *m, const void *k, size_t n, uint32_t h)
{
    if (m->count == 0)
        return NULL;
    map_entry *e = &m->e[map_slot(m, k, n, h)];
    return e->key ? e : NULL;
}

static int map_grow(map *m)
{
    size_t nc = m->cap ? m->cap * 2 : MAP_MIN_CAP;
    if (nc > SIZE_MAX / sizeof(map_entry))
        return -ENOMEM;
    map_entry *ne = calloc(nc, sizeof *ne);
    if (!ne)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].key)
            continue;
        size_t j = m->e[i].hash & (nc - 1);
        while (ne[j].key)
            j = (j + 1) & (nc - 1);
        ne[j] = m->e[i];
    }
    free(m->e);
    m->e = ne;
    m->cap = nc;
    return 0;
}

/* Inserts an absent key (copied) with a NULL value. Returns the entry,
 * valid until the next insert or delete, or NULL on OOM. */
static map_entry *map_insert(map *m, const void *k, size_t n, uint32_t h)
{
    if ((m->count + 1) * 4 > m->cap * 3 && map_grow(m) < 0)
        return NULL;
    char *copy = malloc(n + 1);
    if (!copy)
        return NULL;
    if (n)
        memcpy(copy, k, n);
    copy[n] = '\0';
    map_entry *e = &m->e[map_slot(m, k, n, h)];
    *e = (map_entry){.key = copy, .key_len = (uint32_t)n, .hash = h};
    m->count++;
    return e;
}

/* Frees the entry's key (not its value) and closes the gap by shifting the
 * rest of its cluster back. */
static void map_delete(map *m, map_entry *victim)
{
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(victim - m->e);
    free(victim->key);
    m->count--;
    for (size_t j = (hole + 1) & mask; m->e[j].key; j = (j + 1) & mask) {
        size_t home = m->e[j].hash & mask;
        /* Entry j may move into the hole unless its home lies cyclically in
         * (hole, j]. */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (stays)
            continue;
        m->e[hole] = m->e[j];
        hole = j;
    }
    memset(&m->e[hole], 0, sizeof m->e[hole]);
}

static void map_free(map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->e[i].key);
    free(m->e);
    memset(m, 0, sizeof *m);
}

/* ---- interval join ------------------------------------------------------- */

typedef struct bucket bucket;

typedef struct rec {
    struct rec *prev, *next;  /* within its bucket and side */
    bucket *b;
    int64_t ts;
    size_t payload_len;
    uint8_t side;
    unsigned char payload[];
} rec;

struct bucket {
    const char *key;          /* the map entry's copy */
    uint32_t key_len;
    uint32_t hash;
    rec *head[2], *tail[2];
    size_t n;                 /* records of both sides */
};

struct cf_join_interval {
    int64_t window;
    int64_t lateness;
    size_t max_buffered;
    cf_join_emit_fn emit;
    void *ctx;
    int64_t wm;               /* CF_TIME_NONE until the first advance */
    map keys;                 /* key -> bucket */
    rec **heap;               /* min-heap on ts of all buffered records */
    size_t heap_len, heap_cap;
    cf_join_interval_stats st;
};

/* a - b saturated to int64, for b >= 0. */
static int64_t sat_sub(int64_t a, int64_t b)
{
    return a < INT64_MIN + b ? INT64_MIN : a - b;
}

cf_join_interval *cf_join_interval_new(int64_t window_ms, int64_t allowed_lateness_ms,
                                       size_t max_buffered, cf_join_emit_fn emit, void *ctx)
{
    if (window_ms < 0 || window_ms > DURATION_MAX || allowed_lateness_ms < 0 ||
        allowed_lateness_ms > DURATION_MAX || max_buffered == 0 || !emit)
        return NULL;
    cf_join_interval *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->window = window_ms;
    j->lateness = allowed_lateness_ms;
    j->max_buffered = max_buffered;
    j->emit = emit;
    j->ctx = ctx;
    j->wm = CF_TIME_NONE;
    return j;
}

void cf_join_interval_free(cf_join_interval *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->heap_len; i++)
        free(j->heap[i]);
    for (size_t i = 0; i < j->keys.cap; i++)
        free(j->keys.e[i].val);
    map_free(&j->keys);
    free(j->heap);
    free(j);
}

static void heap_up(rec **h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p]->ts <= h[i]->ts)
            return;
        rec *t = h[p];
        h[p] = h[i];
        h[i] = t;
        i = p;
    }
}

static void heap_down(rec **h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && h[l]->ts < h[m]->ts)
            m = l;
        if (l + 1 < n && h[l + 1]->ts < h[m]->ts)
            m = l + 1;
        if (m == i)
            return;
        rec *t = h[m];
        h[m] = h[i];
        h[i] = t;
        i = m;
    }
}

/* |a - b| <= w without overflow. */
static bool within(int64_t a, int64_t b, int64_t w)
{
    if (a < b) {
        int64_t t = a;
        a = b;
        b = t;
    }
    /* a >= b; a - b may overflow int64 but not uint64. */
    return (uint64_t)a - (uint64_t)b <= (uint64_t)w;
}

int cf_join_interval_push(cf_join_interval *j, cf_join_side side, const void *key,
                          size_t key_len, int64_t ts, const void *payload, size_t payload_len)
{
    int s = side == CF_JOIN_RIGHT ? 1 : 0;
    j->st.pushed[s]++;
    if (key_len > CF_JOIN_MAX_BYTES || payload_len > CF_JOIN_MAX_BYTES) {
        j->st.refused++;
        return -EINVAL;
    }
    if (j->wm != CF_TIME_NONE && ts < sat_sub(j->wm, j->lateness)) {
        j->st.late++;
        return -ERANGE;
    }
    if (j->heap_len >= j->max_buffered) {
        j->st.refused++;
        return -ENOBUFS;
    }

    /* Reserve everything that can fail before emitting anything, so a
     * failed push has no effect. */
    if (j->heap_len == j->heap_cap) {
        size_t nc = j->heap_cap ? j->heap_cap * 2 : 64;
        if (nc > j->max_buffered)
            nc = j->max_buffered;
        if (nc > SIZE_MAX / sizeof(rec *))
            return -ENOMEM;
        rec **nh = realloc(j->heap, nc * sizeof *nh);
        if (!nh)
            return -ENOMEM;
        j->heap = nh;
        j->heap_cap = nc;
    }
    rec *r = malloc(sizeof *r + payload_len);
    if (!r)
        return -ENOMEM;
    uint32_t h = key_hash(key, key_len);
    map_entry *e = map_find(&j->keys, key, key_len, h);
    bucket *b;
    if (e) {
        b = e->val;
    } else {
        b = calloc(1, sizeof *b);
        if (!b || !(e = map_insert(&j->keys, key, key_len, h))) {
            free(b);
            free(r);
            return -ENOMEM;
        }
        e->val = b;
        b->key = e->key;
        b->key_len = (uint32_t)key_len;
        b->hash = h;
        j->st.buffered_bytes += key_len;
    }

    /* Probe the other side, oldest first. */
    int emitted = 0;
    cf_join_record self = {b->key, key_len, ts, payload, payload_len};
    for (const rec *o = b->head[!s]; o; o = o->next) {
        if (!within(ts, o->ts, j->window))
            continue;
        cf_join_record other = {b->key, key_len, o->ts, o->payload, o->payload_len};
        if (s == 0)
            j->emit(j->ctx, &self, &other);
        else
            j->emit(j->ctx, &other, &self);
        emitted++;
    }
    j->st.joined += (uint64_t)emitted;

    /* Buffer it. */
    r->b = b;
    r->ts = ts;
    r->side = (uint8_t)s;
    r->payload_len = payload_len;
    if (payload_len)
        memcpy(r->payload, payload, payload_len);
    r->next = NULL;
    r->prev = b->tail[s];
    if (b->tail[s])
        b->tail[s]->next = r;
    else
        b->head[s] = r;
    b->tail[s] = r;
    b->n++;
    j->heap[j->heap_len] = r;
    heap_up(j->heap, j->heap_len++);
    j->st.buffered[s]++;
    j->st.buffered_bytes += payload_len;
    return emitted;
}

/* Unlinks and frees one record; frees its bucket and key when empty. */
static void drop_rec(cf_join_interval *j, rec *r)
{
    bucket *b = r->b;
    if (r->prev)
        r->prev->next = r->next;
    else
        b->head[r->side] = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        b->tail[r->side] = r->prev;
    j->st.buffered[r->side]--;
    j->st.buffered_bytes -= r->payload_len;
    free(r);
    if (--b->n == 0) {
        map_entry *e = map_find(&j->keys, b->key, b->key_len, b->hash);
        j->st.buffered_bytes -= b->key_len;
        free(b);
        map_delete(&j->keys, e);
    }
}

size_t cf_join_interval_advance(cf_join_interval *j, int64_t wm)
{
    if (j->wm != CF_TIME_NONE && wm <= j->wm)
        return 0;
    j->wm = wm;
    /* Expired: ts + window + lateness < W, i.e. ts < W - window - lateness. */
    int64_t horizon = sat_sub(sat_sub(wm, j->window), j->lateness);
    size_t removed = 0;
    while (j->heap_len && j->heap[0]->ts < horizon) {
        rec *r = j->heap[0];
        j->heap[0] = j->heap[--j->heap_len];
        heap_down(j->heap, j->heap_len, 0);
        drop_rec(j, r);
        removed++;
    }
    j->st.expired += removed;
    return removed;
}

int64_t cf_join_interval_watermark(const cf_join_interval *j) { return j->wm; }

void cf_join_interval_stats_get(const cf_join_interval *j, cf_join_interval_stats *ret_stats)
{
    *ret_stats = j->st;
}

/* ---- stream-table join --------------------------------------------------- */

struct cf_join_table {
    size_t max_entries;
    map m;                    /* key -> owned value (val, val_len) */
    cf_join_table_stats st;
};

cf_join_table *cf_join_table_new(size_t max_entries)
{
    if (max_entries == 0)
        return NULL;
    cf_join_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->max_entries = max_entries;
    return t;
}

void cf_join_table_free(cf_join_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->m.cap; i++)
        free(t->m.e[i].val);
    map_free(&t->m);
    free(t);
}

int cf_join_table_upsert(cf_join_table *t, const void *key, size_t key_len, const void *value,
                         size_t value_len)
{
    if (key_len > CF_JOIN_MAX_BYTES || value_len > CF_JOIN_MAX_BYTES) {
        t->st.refused++;
        return -EINVAL;
    }
    uint32_t h = key_hash(key, key_len);
    map_entry *e = map_find(&t->m, key, key_len, h);
    if (!e && t->m.count >= t->max_entries) {
        t->st.refused++;
        return -ENOBUFS;
    }
    /* +1 so an empty value is still a non-NULL pointer. */
    void *copy = malloc(value_len + 1);
    if (!copy)
        return -ENOMEM;
    if (value_len)
        memcpy(copy, value, value_len);
    if (e) {
        t->st.bytes -= e->val_len;
        free(e->val);
    } else {
        e = map_insert(&t->m, key, key_len, h);
        if (!e) {
            free(copy);
            return -ENOMEM;
        }
        t->st.bytes += key_len;
    }
    e->val = copy;
    e->val_len = value_len;
    t->st.bytes += value_len;
    t->st.entries = t->m.count;
    return 0;
}

int cf_join_table_delete(cf_join_table *t, const void *key, size_t key_len)
{
    map_entry *e = map_find(&t->m, key, key_len, key_hash(key, key_len));
    if (!e)
        return -ENOENT;
    t->st.bytes -= e->val_len + e->key_len;
    free(e->val);
    map_delete(&t->m, e);
    t->st.entries = t->m.count;
    return 0;
}

const void *cf_join_table_enrich(cf_join_table *t, const void *key, size_t key_len,
                                 size_t *ret_len)
{
    map_entry *e = map_find(&t->m, key, key_len, key_hash(key, key_len));
    if (!e) {
        t->st.misses++;
        return NULL;
    }
    t->st.hits++;
    if (ret_len)
        *ret_len = e->val_len;
    return e->val;
}

void cf_join_table_stats_get(const cf_join_table *t, cf_join_table_stats *ret_stats)
{
    *ret_stats = t->st;
}
