#include "sql_view.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_kv.h"
#include "cf_time.h"

/* Layout.
 * - Groups: one malloc'd record per distinct key (a 32-byte header, the key
 *   values, for running views the aggregate state, then the key's string
 *   bytes), in an open-addressing table of (hash, pointer) slots,
 *   refcounted by the cells/sessions that use them.
 * - Windows (TUMBLING, HOPPING): panes (see "windows: panes"
 *   below): a cell per (pane, group) holds the pane's aggregate state, so
 *   an event updates one state whatever size / advance is, and a window's
 *   result is merged from its panes when emitted. Cells come from
 *   fixed-size slabs with a free list (no allocation per event once warm),
 *   are found through one (hash, pointer) table keyed by (start, key), and
 *   are listed per grid position in a start-sorted slot array. Whether a
 *   window fired is a function of the watermark (W >= end - 1).
 * - Sessions: per group a list sorted by first event time; one heap of all
 *   sessions ordered by (action time, key, first), the action being firing
 *   (last + gap - 1) for an open session and purging (that + grace) for a
 *   fired one, lazy about keys that move later (a session is re-placed
 *   only when it surfaces), so a join costs O(1).
 * - Running rows (NONE): the TTL/eviction heap orders groups by (newest
 *   event time, key), lazily in the same way.
 * Counters are statistics, not state: save/load does not carry them. */

#define NIL_POS 0x7fffffffu
#define NIL_IDX UINT32_MAX
#define MAX_KEYS 16u
/* Key bytes per group; a longer key is refused (-EINVAL). */
#define MAX_KEY_STR (1u << 20)
/* Windows per event of a HOPPING view (size / advance): bounds the work
 * one event can cause. */
#define MAX_HOPS 4096
#define SLAB 256u
#define KEY_SEED 0x6b6579735f73716cULL /* "keys_sql" */
#define SAVE_MAGIC 0x56514c53u         /* "SLQV" */
#define SAVE_VERSION 1u
/* Session group blocks (blk_alloc): 16-byte size classes up to this many,
 * carved from chunks that double from BLK_CHUNK_MIN to BLK_CHUNK_MAX. */
#define BLK_CLASSES 64u
#define BLK_CHUNK_MIN ((size_t)64 << 10)
#define BLK_CHUNK_MAX ((size_t)4 << 20)

/* 32 bytes before the key: what each shape needs shares the space. */
typedef struct group {
    uint64_t hash;
    uint32_t refs;          /* cells or sessions using it (running: 1) */
    union {
        uint32_t heap_pos;  /* running */
        uint32_t mark;      /* windows: stamp of the last gather() that saw it */
        uint32_t sinl;      /* SESSION: its inline session slot (SINL_*) */
    };
    union {
        struct {
            int64_t last_ts;    /* running: newest event time */
            int64_t placed;     /* running: heap key as placed (<= last_ts) */
        };
        struct sess *sessions;  /* SESSION: sorted by first */
        uint32_t ghead;         /* windows: first of its cells in v->gcell */
    };
    sql_value key[];        /* nkeys values; then the state (running), then strings */
} group;

typedef struct cell {
    int64_t start;          /* grid position: pane start and window start */
    group *g;
    struct cell *next;      /* same slot, or the free list */
    uint32_t revision;      /* window start's revision for g, with rec */
    uint16_t born;          /* windows of the pane already fired at its first event */
    uint8_t has_data;       /* the state holds pane data */
    uint8_t rec;            /* revision is a record for (window start, g) */
    /* aggregate state follows (8-aligned) */
} cell;

typedef struct wslot {
    int64_t start;
    cell *head;
    uint32_t n;
} wslot;

typedef struct sess {
    int64_t first, last;
    int64_t placed;         /* heap key as placed (<= the true one) */
    struct sess *next;
    group *g;
    uint32_t revision;
    uint32_t heap_pos : 31; /* the heap holds fewer than 2^30 (heap_reserve) */
    uint32_t fired : 1;
    /* aggregate state follows (8-aligned) */
} sess;

/* A session group made by an event carries room for one session at the end
 * of its own block (group_inline_sess), used by its first session and by a
 * later one once that is gone: the usual group holds one session at a
 * time, which then sits beside its key (one cache miss and one TLB miss
 * less per click than a separately allocated record, and one malloc less
 * per new user). Loaded groups have none. */
enum { SINL_NONE = 0, SINL_FREE = 1, SINL_USED = 2 };

typedef struct pslot {
    uint64_t hash;
    void *p;                /* NULL: empty */
} pslot;

/* A cell table slot: the cell's index and the high half of its hash. */
typedef struct cslot {
    uint32_t idx;           /* NIL_IDX: empty */
    uint32_t tag;
} cslot;

typedef struct pmap {
    pslot *s;
    uint32_t mask;          /* capacity - 1 */
    uint32_t used;
} pmap;

struct sql_view {
    sql_view_config cfg;
    sql_agg_spec specs[64];
    sql_agg_set *aggs;
    size_t state_size;
    size_t cell_size, sess_size;
    int64_t wm;
    uint32_t k;             /* panes per window (size / advance) */
    void *scratch;          /* a state that panes are merged into */

    /* During an apply: the caller's distinct hashes (sql_view_apply_hashed)
     * or NULL. */
    const uint64_t *arg_hash;

    /* pane_of's last answer (windows): events come in near time order, so
     * most fall in the pane of the one before, and an apply and its
     * look-ahead steps skip a 64-bit division each. A cache, not state. */
    int64_t pane_p, pane_first;
    bool pane_ok;

    pmap groups;
    cslot *cmap;            /* cells by (start, key) */
    uint32_t cmask, cused;

    /* windows */
    wslot *slots;
    uint32_t nslots, slots_cap;
    char **slabs;
    uint32_t nslabs;
    uint32_t *free_idx;     /* free cell indexes (a stack) */
    uint32_t nfree;

    /* Session groups with an inline session (SINL_*) come from chunks of
     * their own (blk_alloc), freed blocks kept per 16-byte size class. */
    char **bchunks;
    uint32_t nbchunks, bchunks_cap;
    char *bcur;
    size_t bleft;
    void *bfree[BLK_CLASSES];

    /* sessions (sess *) or running groups (group *); heap_key[i] is
     * heap[i]'s placed time, so sifting compares times in the array, not
     * through a pointer to a node that is cold (a cache miss per level:
     * 4% of lib_bench's samples were heap_up on new sessions). */
    void **heap;
    int64_t *heap_key;
    uint32_t heap_n, heap_cap;

    size_t n_open, n_kept;
    uint64_t applied, late_dropped, late_updates, evictions, refusals, expired;

    /* scratch for emitting results: the view's own working memory */
    sql_value *res;
    cf_buf text;
    void **sort;
    size_t sort_cap;
    uint32_t stamp;
    const cell **gcell;
    uint32_t *gnext;
    uint32_t gcap;
};

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline void *cell_state(const cell *c)
{
    return (char *)c + sizeof(cell);
}

static inline void *sess_state(const sess *x)
{
    return (char *)x + ((sizeof(sess) + 7) & ~(size_t)7);
}

static inline size_t group_state_off(uint32_t nkeys)
{
    return offsetof(group, key) + (size_t)nkeys * sizeof(sql_value);
}

static inline void *group_state(const sql_view *v, const group *g)
{
    return (char *)g + group_state_off(v->cfg.nkeys);
}

/* One event into an aggregate state, with the caller's distinct hashes. */
static inline int agg_add(const sql_view *v, void *st, const sql_value *args, int64_t ts,
                          uint64_t arrival)
{
    return sql_agg_add_hashed(v->aggs, st, args, v->arg_hash, ts, arrival);
}

/* ---- keys ----------------------------------------------------------------- */

static inline bool is_text(uint8_t t)
{
    return t == SQL_STRING || t == SQL_ARRAY || t == SQL_JSON;
}

static uint64_t value_hash(uint64_t base, sql_value x)
{
    uint64_t seed = base ^ x.type;
    if (is_text(x.type))
        return cf_hash64(x.u.s, x.len, seed);
    uint8_t b[8] = {0};
    uint64_t bits = 0;
    if (x.type == SQL_BOOLEAN)
        bits = x.u.b;
    else if (x.type == SQL_DOUBLE) {
        double d = x.u.d == 0 ? 0.0 : x.u.d;
        memcpy(&bits, &d, 8);
    } else if (x.type != SQL_NULL)
        bits = (uint64_t)x.u.i;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(bits >> (8 * i));
    return cf_hash64(b, 8, seed);
}

static inline uint64_t key_hash(const sql_view *v, const sql_value *key)
{
    uint32_t n = v->cfg.nkeys;
    uint64_t base = KEY_SEED ^ v->cfg.hash_seed;
    /* The common GROUP BY of one string column, without the dispatch. */
    if (n == 1 && key[0].type == SQL_STRING)
        return cf_hash64(key[0].u.s, key[0].len, base ^ SQL_STRING);
    if (n == 1)
        return value_hash(base, key[0]);
    uint64_t h = base;
    for (uint32_t i = 0; i < n; i++)
        h = mix64(h ^ value_hash(base, key[i])) + i;
    return h;
}

static bool value_eq(sql_value a, sql_value b)
{
    if (a.type != b.type)
        return false;
    switch (a.type) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN: return a.u.b == b.u.b;
    case SQL_DOUBLE: return a.u.d == b.u.d;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return a.u.i == b.u.i;
    default: return a.len == b.len && (a.len == 0 || memcmp(a.u.s, b.u.s, a.len) == 0);
    }
}

static inline bool key_eq(const group *g, const sql_value *key, uint32_t n)
{
    if (n == 1 && key[0].type == SQL_STRING)
        return g->key[0].type == SQL_STRING && g->key[0].len == key[0].len &&
               memcmp(g->key[0].u.s, key[0].u.s, key[0].len) == 0;
    for (uint32_t i = 0; i < n; i++)
        if (!value_eq(g->key[i], key[i]))
            return false;
    return true;
}

static int key_cmp(const sql_value *a, const sql_value *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        int c = sql_agg_value_cmp(a[i], b[i]);
        if (c)
            return c;
        if (a[i].type != b[i].type) /* e.g. 1 vs 1.0: apart, in type order */
            return a[i].type < b[i].type ? -1 : 1;
    }
    return 0;
}

/* ---- (hash, pointer) table: linear probing, backward-shift deletion -------- */

static int pmap_reserve(pmap *m, uint32_t n)
{
    uint64_t cap = m->s ? (uint64_t)m->mask + 1 : 0;
    uint64_t want = (uint64_t)m->used + n;
    if (want * 4 <= cap * 3)
        return 0;
    uint64_t ncap = cap ? cap : 16;
    while (want * 4 > ncap * 3)
        ncap *= 2;
    if (ncap > (1u << 31))
        return -ENOMEM;
    pslot *s = cf_kv_table_alloc((size_t)ncap * sizeof *s); /* the process's, when large */
    if (!s)
        return -ENOMEM;
    for (uint64_t i = 0; i < cap; i++)
        if (m->s[i].p) {
            uint32_t j = (uint32_t)m->s[i].hash & (uint32_t)(ncap - 1);
            while (s[j].p)
                j = (j + 1) & (uint32_t)(ncap - 1);
            s[j] = m->s[i];
        }
    cf_kv_table_free(m->s, (size_t)cap * sizeof(pslot));
    m->s = s;
    m->mask = (uint32_t)(ncap - 1);
    return 0;
}

/* Needs room (pmap_reserve). */
static void pmap_put(pmap *m, uint64_t h, void *p)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->s[i].p)
        i = (i + 1) & m->mask;
    m->s[i].hash = h;
    m->s[i].p = p;
    m->used++;
}

static void pmap_del(pmap *m, uint64_t h, const void *p)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->s[i].p != p)
        i = (i + 1) & m->mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (!m->s[j].p)
            break;
        uint32_t home = (uint32_t)m->s[j].hash & m->mask;
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->s[i] = m->s[j];
            i = j;
        }
    }
    m->s[i].p = NULL;
    m->used--;
}

static size_t pmap_bytes(const pmap *m)
{
    return m->s ? ((size_t)m->mask + 1) * sizeof(pslot) : 0;
}

/* ---- groups ---------------------------------------------------------------- */

static group *group_find(const sql_view *v, uint64_t h, const sql_value *key)
{
    if (!v->groups.s)
        return NULL;
    for (uint32_t i = (uint32_t)h & v->groups.mask;; i = (i + 1) & v->groups.mask) {
        const pslot *s = &v->groups.s[i];
        if (!s->p)
            return NULL;
        if (s->hash == h && key_eq(s->p, key, v->cfg.nkeys))
            return s->p;
    }
}

/* Whether a key's string bytes fit a group (MAX_KEY_STR). */
static bool key_fits(const sql_view *v, const sql_value *key)
{
    size_t n = 0;
    for (uint32_t i = 0; i < v->cfg.nkeys; i++)
        if (is_text(key[i].type))
            n += key[i].len;
    return n <= MAX_KEY_STR;
}

static inline size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* Where a session group's inline session lives: after the key strings. */
static inline size_t group_strs(const sql_view *v, const group *g)
{
    size_t n = 0;
    for (uint32_t i = 0; i < v->cfg.nkeys; i++)
        if (is_text(g->key[i].type))
            n += g->key[i].len;
    return n;
}

static inline sess *group_inline_sess(const sql_view *v, const group *g)
{
    return (sess *)(void *)((char *)g + group_state_off(v->cfg.nkeys) +
                            align8(group_strs(v, g)));
}

/* ---- session group blocks ------------------------------------------------------
 * A session view's groups are its largest state (a group and its inline
 * session per user: ~200 MB for lib_bench's 774k open sessions) and are
 * read at random, one per click. malloc spreads them over 4 KiB pages,
 * each a TLB miss and a page walk; here they are carved from chunks that
 * grow to 4 MiB (cf_kv_table_alloc: the process's large-table memory from
 * that size on, which may be huge pages), so a small view stays small and
 * a large one packs its groups without malloc's headers. A freed block
 * goes on its size class's list for the next group of that size. */

static inline size_t blk_round(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static void *blk_alloc(sql_view *v, size_t n)
{
    n = blk_round(n);
    if (n > BLK_CLASSES * 16)
        return malloc(n);
    void **head = &v->bfree[n / 16 - 1];
    if (*head) {
        void *p = *head;
        memcpy(head, p, sizeof p);
        return p;
    }
    if (v->bleft < n) {
        if (v->nbchunks == v->bchunks_cap) {
            uint32_t ncap = v->bchunks_cap ? v->bchunks_cap * 2 : 8;
            char **c = realloc(v->bchunks, (size_t)ncap * sizeof *c);
            if (!c)
                return NULL;
            v->bchunks = c;
            v->bchunks_cap = ncap;
        }
        size_t size = v->nbchunks < 6 ? BLK_CHUNK_MIN << v->nbchunks : BLK_CHUNK_MAX;
        char *chunk = cf_kv_table_alloc(size);
        if (!chunk)
            return NULL;
        v->bchunks[v->nbchunks++] = chunk;
        v->bcur = chunk;
        v->bleft = size;
    }
    void *p = v->bcur;
    v->bcur += n;
    v->bleft -= n;
    return p;
}

static void blk_free(sql_view *v, void *p, size_t n)
{
    n = blk_round(n);
    if (n > BLK_CLASSES * 16) {
        free(p);
        return;
    }
    void **head = &v->bfree[n / 16 - 1];
    memcpy(p, head, sizeof *head);
    *head = p;
}

static void blk_free_all(sql_view *v)
{
    for (uint32_t i = 0; i < v->nbchunks; i++)
        cf_kv_table_free(v->bchunks[i], i < 6 ? BLK_CHUNK_MIN << i : BLK_CHUNK_MAX);
    free(v->bchunks);
}

/* The block of a group with an inline session. */
static inline size_t group_block_size(const sql_view *v, const group *g)
{
    return group_state_off(v->cfg.nkeys) + align8(group_strs(v, g)) + v->sess_size;
}

/* A new group with a copy of key (running views: with an empty state;
 * inline_sess: with room for one session, SINL_USED, see SINL_*). */
static group *group_new(sql_view *v, uint64_t h, const sql_value *key, bool inline_sess)
{
    uint32_t nk = v->cfg.nkeys;
    size_t strs = 0;
    for (uint32_t i = 0; i < nk; i++)
        if (is_text(key[i].type))
            strs += key[i].len;
    if (strs > MAX_KEY_STR)
        return NULL;
    size_t off = group_state_off(nk);
    size_t st = v->cfg.window == SQL_WINDOW_NONE ? v->state_size : 0;
    if (pmap_reserve(&v->groups, 1) < 0)
        return NULL;
    group *g = inline_sess ? blk_alloc(v, off + align8(strs) + v->sess_size)
                           : malloc(off + st + strs);
    if (!g)
        return NULL;
    memset(g, 0, offsetof(group, key));
    g->hash = h;
    if (inline_sess)
        g->sinl = SINL_USED;
    if (v->cfg.window == SQL_WINDOW_NONE)
        g->heap_pos = NIL_POS;
    char *p = (char *)g + off + st;
    for (uint32_t i = 0; i < nk; i++) {
        g->key[i] = key[i];
        if (is_text(key[i].type)) {
            if (key[i].len)
                memcpy(p, key[i].u.s, key[i].len);
            g->key[i].u.s = p;
            p += key[i].len;
        }
    }
    if (st)
        sql_agg_init(v->aggs, group_state(v, g));
    pmap_put(&v->groups, h, g);
    return g;
}

static void group_free(sql_view *v, group *g)
{
    pmap_del(&v->groups, g->hash, g);
    if (v->cfg.window == SQL_WINDOW_NONE)
        sql_agg_fini(v->aggs, group_state(v, g));
    if (v->cfg.window == SQL_WINDOW_SESSION && g->sinl != SINL_NONE)
        blk_free(v, g, group_block_size(v, g));
    else
        free(g);
}

static void group_unref(sql_view *v, group *g)
{
    if (--g->refs == 0)
        group_free(v, g);
}

/* Frees a session's record (its state already fini'ed), or gives its group
 * back the inline slot; before the group's last unref. */
static void sess_release(const sql_view *v, sess *x)
{
    group *g = x->g;
    if (g->sinl == SINL_USED && x == group_inline_sess(v, g))
        g->sinl = SINL_FREE;
    else
        free(x);
}

/* ---- heap (sessions or running groups) -------------------------------------- */

/* A private copy, not cf_heap: the comparison and the position update are
 * inlined here. Ported onto cf_heap (indirect less and moved calls),
 * sql_view_bench lost about 10% on sessions (best of 4 alternating runs,
 * 1M events, 300k users: 1.11M vs 1.23M events/cpu-s) and about 8% on
 * trending (11.5M vs 12.6M), so this copy stays. */

static inline int64_t node_placed(const sql_view *v, const void *p)
{
    return v->cfg.window == SQL_WINDOW_SESSION ? ((const sess *)p)->placed
                                               : ((const group *)p)->placed;
}

static inline void node_setpos(const sql_view *v, void *p, uint32_t pos)
{
    if (v->cfg.window == SQL_WINDOW_SESSION)
        ((sess *)p)->heap_pos = pos;
    else
        ((group *)p)->heap_pos = pos;
}

static inline uint32_t node_pos(const sql_view *v, const void *p)
{
    return v->cfg.window == SQL_WINDOW_SESSION ? ((const sess *)p)->heap_pos
                                               : ((const group *)p)->heap_pos;
}

/* (placed time, key, first) for sessions; (placed, key) for groups, with
 * the placed times given (ka, kb: heap_key's or the node's own). The
 * tie-breaks are read live: only the time is lazy. */
static bool node_less(const sql_view *v, const void *a, int64_t ka, const void *b, int64_t kb)
{
    if (ka != kb)
        return ka < kb;
    if (v->cfg.window == SQL_WINDOW_SESSION) {
        const sess *sa = a, *sb = b;
        if (sa->g != sb->g) {
            int c = key_cmp(sa->g->key, sb->g->key, v->cfg.nkeys);
            if (c)
                return c < 0;
        }
        return sa->first < sb->first;
    }
    return key_cmp(((const group *)a)->key, ((const group *)b)->key, v->cfg.nkeys) < 0;
}

static inline void heap_set(sql_view *v, uint32_t pos, void *p, int64_t key)
{
    v->heap[pos] = p;
    v->heap_key[pos] = key;
    node_setpos(v, p, pos);
}

/* Sifts heap[pos] up; its placed time is read from the node (the caller
 * may just have changed it). */
static void heap_up(sql_view *v, uint32_t pos)
{
    void *p = v->heap[pos];
    int64_t k = node_placed(v, p);
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!node_less(v, p, k, v->heap[parent], v->heap_key[parent]))
            break;
        heap_set(v, pos, v->heap[parent], v->heap_key[parent]);
        pos = parent;
    }
    heap_set(v, pos, p, k);
}

static void heap_down(sql_view *v, uint32_t pos)
{
    void *p = v->heap[pos];
    int64_t k = node_placed(v, p);
    for (;;) {
        uint32_t l = 2 * pos + 1, best = l;
        if (l >= v->heap_n)
            break;
        if (l + 1 < v->heap_n &&
            node_less(v, v->heap[l + 1], v->heap_key[l + 1], v->heap[l], v->heap_key[l]))
            best = l + 1;
        if (!node_less(v, v->heap[best], v->heap_key[best], p, k))
            break;
        heap_set(v, pos, v->heap[best], v->heap_key[best]);
        pos = best;
    }
    heap_set(v, pos, p, k);
}

static int heap_reserve(sql_view *v)
{
    if (v->heap_n < v->heap_cap)
        return 0;
    uint32_t ncap = v->heap_cap ? v->heap_cap * 2 : 64;
    if (ncap > (1u << 30))
        return -ENOMEM;
    void **h = realloc(v->heap, (size_t)ncap * sizeof *h);
    if (!h)
        return -ENOMEM;
    v->heap = h;
    int64_t *hk = realloc(v->heap_key, (size_t)ncap * sizeof *hk);
    if (!hk)
        return -ENOMEM;     /* heap_cap unchanged: the next call grows both again */
    v->heap_key = hk;
    v->heap_cap = ncap;
    return 0;
}

/* Needs room (heap_reserve). */
static void heap_push(sql_view *v, void *p)
{
    v->heap[v->heap_n] = p;
    node_setpos(v, p, v->heap_n);
    heap_up(v, v->heap_n++);
}

static void heap_remove(sql_view *v, void *p)
{
    uint32_t pos = node_pos(v, p);
    void *last = v->heap[--v->heap_n];
    node_setpos(v, p, NIL_POS);
    if (pos == v->heap_n)
        return;
    heap_set(v, pos, last, v->heap_key[v->heap_n]);
    heap_up(v, pos);
    heap_down(v, node_pos(v, last));
}

/* ---- time rules --------------------------------------------------------------- */

static inline int64_t sat_add(int64_t a, int64_t b)
{
    /* b >= 0 at every call site */
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static inline bool reached(const sql_view *v, int64_t t)
{
    return v->wm != CF_TIME_NONE && t <= v->wm;
}

/* Window [start, end): fires at W >= end - 1. */
static inline bool fire_due(const sql_view *v, int64_t end)
{
    return reached(v, end - 1);
}

static inline bool purge_due(const sql_view *v, int64_t end)
{
    return reached(v, sat_add(end - 1, v->cfg.grace_ms));
}

static inline int64_t sess_fire_at(const sql_view *v, int64_t last)
{
    return sat_add(last, v->cfg.gap_ms - 1);
}

static inline int64_t sess_purge_at(const sql_view *v, int64_t last)
{
    return sat_add(sess_fire_at(v, last), v->cfg.grace_ms);
}

static inline int64_t sess_action_at(const sql_view *v, const sess *x)
{
    return x->fired ? sess_purge_at(v, x->last) : sess_fire_at(v, x->last);
}

/* ---- emitting ----------------------------------------------------------------- */

static void emit_row(const sql_view *cv, const group *g, const void *st, int64_t start, int64_t end,
                     uint32_t rev, bool final, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    if (!emit)
        return;
    /* The scratch members are the view's working memory. */
    sql_view *v = (sql_view *)cv;
    cf_buf_reset(&v->text);
    (void)sql_agg_results(v->aggs, st, now, &v->text, v->res);
    sql_view_result r = {
        .start = start,
        .end = end,
        .key = g->key,
        .nkeys = v->cfg.nkeys,
        .aggs = v->res,
        .naggs = v->cfg.naggs,
        .revision = rev,
        .final = final,
        .agg_set = v->aggs,
        .state = st,
    };
    emit(ctx, &r);
}

static void emit_sess(const sql_view *v, const sess *x, bool final, sql_view_emit_fn emit,
                      void *ctx)
{
    emit_row(v, x->g, sess_state(x), x->first, x->last, x->revision, final, x->last, emit, ctx);
}

static int sort_reserve(const sql_view *cv, size_t n)
{
    sql_view *v = (sql_view *)cv;
    if (n <= v->sort_cap)
        return 0;
    size_t ncap = v->sort_cap ? v->sort_cap : 64;
    while (ncap < n)
        ncap *= 2;
    void **s = realloc(v->sort, ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    v->sort = s;
    v->sort_cap = ncap;
    return 0;
}

/* Sorts n pointers with a comparator that sees the view (qsort has no
 * context argument, and lib/ keeps no mutable globals). Heapsort: in place,
 * O(n log n), not stable, which is fine: the orders used are total. */
typedef int (*ptr_cmp_fn)(const sql_view *v, const void *a, const void *b);

static void sift(const sql_view *v, void **a, size_t i, size_t n, ptr_cmp_fn cmp)
{
    void *x = a[i];
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= n)
            break;
        if (l + 1 < n && cmp(v, a[l + 1], a[l]) > 0)
            best = l + 1;
        if (cmp(v, a[best], x) <= 0)
            break;
        a[i] = a[best];
        i = best;
    }
    a[i] = x;
}

static void sort_ptrs(const sql_view *v, void **a, size_t n, ptr_cmp_fn cmp)
{
    for (size_t i = n / 2; i > 0; i--)
        sift(v, a, i - 1, n, cmp);
    for (size_t end = n; end > 1; end--) {
        void *t = a[0];
        a[0] = a[end - 1];
        a[end - 1] = t;
        sift(v, a, 0, end - 1, cmp);
    }
}

static int cmp_group_key(const sql_view *v, const void *a, const void *b)
{
    const group *x = a, *y = b;
    return key_cmp(x->key, y->key, v->cfg.nkeys);
}

/* ---- windows: panes, slots and cells ---------------------------------------------
 * As in cf_winop: a window [g, g + size) is the union of k = size / advance
 * panes [q, q + advance); state is kept per (pane, group), so an event
 * updates one aggregate state whatever k is, and a window's result is
 * merged from its k panes when it is emitted (TUMBLING: k = 1, no merge).
 * A cell keyed by (grid position g, group) serves two roles at once: the
 * group's data in pane g (has_data), and the revision record of window g
 * for the group (rec). Slots (one per grid position, sorted) list their
 * cells; slot g lives while window g does. "Fired" is a function of the
 * watermark; a cell remembers how many of its pane's windows had fired at
 * its first event (born), which tells whether its group was in a window
 * when that window fired (a late event then gives revision 1, otherwise a
 * group new to the fired window fires at revision 0). */

static uint32_t slot_lower(const sql_view *v, int64_t g)
{
    uint32_t lo = 0, hi = v->nslots;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->slots[mid].start < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int slots_reserve(sql_view *v, uint32_t n)
{
    if ((uint64_t)v->nslots + n <= v->slots_cap)
        return 0;
    uint64_t ncap = v->slots_cap ? v->slots_cap : 8;
    while (ncap < (uint64_t)v->nslots + n)
        ncap *= 2;
    if (ncap > (1u << 30))
        return -ENOMEM;
    wslot *s = realloc(v->slots, (size_t)ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    v->slots = s;
    v->slots_cap = (uint32_t)ncap;
    return 0;
}

/* Slot g, created if missing; needs room (slots_reserve). Slot pointers
 * are valid until the next creation. */
static wslot *slot_get(sql_view *v, int64_t g)
{
    uint32_t i = slot_lower(v, g);
    if (i < v->nslots && v->slots[i].start == g)
        return &v->slots[i];
    memmove(&v->slots[i + 1], &v->slots[i], (size_t)(v->nslots - i) * sizeof *v->slots);
    v->nslots++;
    v->slots[i] = (wslot){.start = g};
    return &v->slots[i];
}

static inline uint64_t cell_hash(int64_t start, uint64_t kh)
{
    return mix64(kh ^ ((uint64_t)start * 0x9e3779b97f4a7c15ULL));
}

/* Cells are numbered by slab and position, so the table holds 8-byte
 * (index, hash tag) slots, half of a (hash, pointer) slot: the table of a
 * large window state stays twice as long in cache. */
static inline cell *cell_at(const sql_view *v, uint32_t idx)
{
    return (cell *)(v->slabs[idx / SLAB] + (size_t)(idx % SLAB) * v->cell_size);
}

/* Hot path: cell (g, key) without a group lookup. */
static inline cell *cell_lookup_key(const sql_view *v, int64_t g, uint64_t kh, const sql_value *key)
{
    if (!v->cmap)
        return NULL;
    uint64_t h = cell_hash(g, kh);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & v->cmask;; i = (i + 1) & v->cmask) {
        const cslot *s = &v->cmap[i];
        if (s->idx == NIL_IDX)
            return NULL;
        if (s->tag == tag) {
            cell *c = cell_at(v, s->idx);
            if (c->start == g && c->g->hash == kh && key_eq(c->g, key, v->cfg.nkeys))
                return c;
        }
    }
}

static cell *cell_find(const sql_view *v, int64_t g, const group *grp)
{
    if (!v->cmap)
        return NULL;
    uint64_t h = cell_hash(g, grp->hash);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & v->cmask;; i = (i + 1) & v->cmask) {
        const cslot *s = &v->cmap[i];
        if (s->idx == NIL_IDX)
            return NULL;
        if (s->tag == tag) {
            cell *c = cell_at(v, s->idx);
            if (c->start == g && c->g == grp)
                return c;
        }
    }
}

/* The pane data of (g, grp), or NULL. */
static inline const cell *data_find(const sql_view *v, int64_t g, const group *grp)
{
    const cell *c = cell_find(v, g, grp);
    return c && c->has_data ? c : NULL;
}

static inline uint64_t cell_hash_of(const sql_view *v, uint32_t idx)
{
    const cell *c = cell_at(v, idx);
    return cell_hash(c->start, c->g->hash);
}

static void cmap_place(cslot *m, uint32_t mask, uint64_t h, uint32_t idx)
{
    uint32_t i = (uint32_t)h & mask;
    while (m[i].idx != NIL_IDX)
        i = (i + 1) & mask;
    m[i].idx = idx;
    m[i].tag = (uint32_t)(h >> 32);
}

/* Room for n more cells in the table (load factor <= 3/4). */
static int cmap_reserve(sql_view *v, uint32_t n)
{
    uint64_t cap = v->cmap ? (uint64_t)v->cmask + 1 : 0;
    uint64_t want = (uint64_t)v->cused + n;
    if (want * 4 <= cap * 3)
        return 0;
    uint64_t ncap = cap ? cap : 16;
    while (want * 4 > ncap * 3)
        ncap *= 2;
    if (ncap > (1u << 31))
        return -ENOMEM;
    cslot *m = malloc((size_t)ncap * sizeof *m);
    if (!m)
        return -ENOMEM;
    for (uint64_t i = 0; i < ncap; i++)
        m[i].idx = NIL_IDX;
    for (uint64_t i = 0; i < cap; i++)
        if (v->cmap[i].idx != NIL_IDX)
            cmap_place(m, (uint32_t)(ncap - 1), cell_hash_of(v, v->cmap[i].idx), v->cmap[i].idx);
    free(v->cmap);
    v->cmap = m;
    v->cmask = (uint32_t)(ncap - 1);
    return 0;
}

/* Removes cell c (hash h) from the table, backward-shift deletion; returns
 * its index. */
static uint32_t cmap_remove(sql_view *v, uint64_t h, const cell *c)
{
    uint32_t i = (uint32_t)h & v->cmask;
    while (cell_at(v, v->cmap[i].idx) != c)
        i = (i + 1) & v->cmask;
    uint32_t idx = v->cmap[i].idx, j = i;
    for (;;) {
        j = (j + 1) & v->cmask;
        if (v->cmap[j].idx == NIL_IDX)
            break;
        uint32_t home = (uint32_t)cell_hash_of(v, v->cmap[j].idx) & v->cmask;
        if (((j - home) & v->cmask) >= ((j - i) & v->cmask)) {
            v->cmap[i] = v->cmap[j];
            i = j;
        }
    }
    v->cmap[i].idx = NIL_IDX;
    v->cused--;
    return idx;
}

/* Makes sure n cells can be created without allocating. */
static int cells_reserve(sql_view *v, uint32_t n)
{
    if (cmap_reserve(v, n) < 0)
        return -ENOMEM;
    while (v->nfree < n) {
        if (v->nslabs >= NIL_IDX / SLAB - 1)
            return -ENOMEM;
        uint32_t ncap = (v->nslabs + 1) * SLAB;
        uint32_t *fi = realloc(v->free_idx, (size_t)ncap * sizeof *fi);
        if (!fi)
            return -ENOMEM;
        v->free_idx = fi;
        char **sl = realloc(v->slabs, (size_t)(v->nslabs + 1) * sizeof *sl);
        if (!sl)
            return -ENOMEM;
        v->slabs = sl;
        char *mem = malloc(SLAB * v->cell_size);
        if (!mem)
            return -ENOMEM;
        uint32_t base = v->nslabs * SLAB;
        v->slabs[v->nslabs++] = mem;
        for (uint32_t i = SLAB; i > 0; i--) {
            ((cell *)(mem + (size_t)(i - 1) * v->cell_size))->g = NULL;
            v->free_idx[v->nfree++] = base + i - 1;
        }
    }
    return 0;
}

/* A new cell (g, grp) with neither data nor record, in slot sl; needs room
 * (cells_reserve). */
static cell *cell_new(sql_view *v, wslot *sl, group *grp)
{
    uint32_t idx = v->free_idx[--v->nfree];
    cell *c = cell_at(v, idx);
    c->start = sl->start;
    c->g = grp;
    c->revision = 0;
    c->born = 0;
    c->has_data = 0;
    c->rec = 0;
    c->next = sl->head;
    sl->head = c;
    sl->n++;
    grp->refs++;
    sql_agg_init(v->aggs, cell_state(c));
    cmap_place(v->cmap, v->cmask, cell_hash(sl->start, grp->hash), idx);
    v->cused++;
    return c;
}

/* Frees a cell; the caller fixes its slot. */
static void cell_destroy(sql_view *v, cell *c)
{
    uint32_t idx = cmap_remove(v, cell_hash(c->start, c->g->hash), c);
    sql_agg_fini(v->aggs, cell_state(c));
    group_unref(v, c->g);
    c->g = NULL;
    v->free_idx[v->nfree++] = idx;
}

/* Pane of ts and the first window holding it. False when some window of
 * ts does not fit int64 ms (the event is then in no window). */
static inline bool pane_of(const sql_view *cv, int64_t ts, int64_t *ret_pane, int64_t *ret_first)
{
    sql_view *v = (sql_view *)cv; /* the cache is the view's working memory */
    int64_t s = v->cfg.advance_ms, size = v->cfg.size_ms, p, first, end;
    if (v->pane_ok && ts >= v->pane_p && (uint64_t)ts - (uint64_t)v->pane_p < (uint64_t)s) {
        *ret_pane = v->pane_p;
        *ret_first = v->pane_first;
        return true;
    }
    if (__builtin_mul_overflow(cf_floor_div(ts, s), s, &p) ||
        __builtin_sub_overflow(p, size - s, &first) || __builtin_add_overflow(p, size, &end))
        return false;
    v->pane_p = p;
    v->pane_first = first;
    v->pane_ok = true;
    *ret_pane = p;
    *ret_first = first;
    return true;
}

/* Sums one group's pane states over a window: one cell is read in place,
 * more are merged into the view's scratch state. */
typedef struct merger {
    const cell *one;
    uint32_t n;
} merger;

static void merge_cell(const sql_view *cv, merger *mg, const cell *c)
{
    sql_view *v = (sql_view *)cv; /* the scratch is the view's working memory */
    if (mg->n == 1) {
        sql_agg_clear(v->aggs, v->scratch);
        (void)sql_agg_merge(v->aggs, v->scratch, cell_state(mg->one));
    }
    if (mg->n == 0)
        mg->one = c;
    else
        (void)sql_agg_merge(v->aggs, v->scratch, cell_state(c));
    mg->n++;
}

static const void *merged_state(const sql_view *v, const merger *mg)
{
    return mg->n == 1 ? cell_state(mg->one) : v->scratch;
}

/* Merges window g for one group by k lookups. *ret_prior says whether the
 * group had data in the window before the window fired. O(k). */
static void merge_group(const sql_view *v, int64_t g, const group *grp, merger *mg,
                        bool *ret_prior)
{
    bool prior = false;
    for (uint32_t j = 0; j < v->k; j++) {
        const cell *c = data_find(v, g + (int64_t)j * v->cfg.advance_ms, grp);
        if (!c)
            continue;
        /* Window g is window number k - 1 - j of pane g + j advances. */
        if (v->k - 1 - j >= c->born)
            prior = true;
        merge_cell(v, mg, c);
    }
    *ret_prior = prior;
}

static int gather_reserve(const sql_view *cv, uint32_t n)
{
    sql_view *v = (sql_view *)cv;
    if (n <= v->gcap)
        return 0;
    uint32_t ncap = v->gcap ? v->gcap : 64;
    while (ncap < n)
        ncap *= 2;
    const cell **gc = realloc(v->gcell, (size_t)ncap * sizeof *gc);
    if (!gc)
        return -ENOMEM;
    v->gcell = gc;
    uint32_t *gn = realloc(v->gnext, (size_t)ncap * sizeof *gn);
    if (!gn)
        return -ENOMEM;
    v->gnext = gn;
    v->gcap = ncap;
    return sort_reserve(v, ncap);
}

/* Collects the distinct groups with data in the panes of the window at
 * slot index wi into v->sort, in key order, each with the chain of its
 * cells (group.ghead, v->gnext). Returns the number of groups or -ENOMEM.
 * O(cells + groups log groups). */
static int gather(const sql_view *cv, uint32_t wi)
{
    sql_view *v = (sql_view *)cv; /* scratch only */
    int64_t end = v->slots[wi].start + v->cfg.size_ms;
    uint32_t total = 0;
    for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
        total += v->slots[i].n;
    if (gather_reserve(v, total) < 0)
        return -ENOMEM;
    if (++v->stamp == 0) {
        /* Wrapped: old marks could match again. */
        for (uint32_t i = 0; v->groups.s && i <= v->groups.mask; i++)
            if (v->groups.s[i].p)
                ((group *)v->groups.s[i].p)->mark = 0;
        v->stamp = 1;
    }
    uint32_t n = 0, ng = 0;
    for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
        for (const cell *c = v->slots[i].head; c; c = c->next) {
            if (!c->has_data)
                continue;
            group *g = c->g;
            if (g->mark != v->stamp) {
                g->mark = v->stamp;
                g->ghead = UINT32_MAX;
                v->sort[ng++] = g;
            }
            v->gcell[n] = c;
            v->gnext[n] = g->ghead;
            g->ghead = n++;
        }
    sort_ptrs(v, v->sort, ng, cmp_group_key);
    return (int)ng;
}

/* Emits every group of the window at slot index wi, in key order, with
 * revision 0 (its first firing, or interim results). Returns how many. */
static size_t emit_window(const sql_view *v, uint32_t wi, bool final, int64_t now,
                          sql_view_emit_fn emit, void *ctx)
{
    int64_t g = v->slots[wi].start;
    int ng = gather(v, wi);
    if (ng < 0) {
        /* No memory to sort: group by group through the map, unordered. */
        size_t n = 0;
        int64_t end = g + v->cfg.size_ms;
        for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
            for (const cell *c = v->slots[i].head; c; c = c->next) {
                if (!c->has_data)
                    continue;
                bool first = true, prior;
                for (int64_t q = g; q < c->start && first; q += v->cfg.advance_ms)
                    first = !data_find(v, q, c->g);
                if (!first)
                    continue;
                merger mg = {0};
                merge_group(v, g, c->g, &mg, &prior);
                emit_row(v, c->g, merged_state(v, &mg), g, end, 0, final, now, emit, ctx);
                n++;
            }
        return n;
    }
    for (int i = 0; i < ng; i++) {
        const group *grp = v->sort[i];
        merger mg = {0};
        for (uint32_t x = grp->ghead; x != UINT32_MAX; x = v->gnext[x])
            merge_cell(v, &mg, v->gcell[x]);
        emit_row(v, grp, merged_state(v, &mg), g, g + v->cfg.size_ms, 0, final, now, emit, ctx);
    }
    return (size_t)ng;
}

/* Everything but the hot case: a group's first event in a pane, or an
 * event in a pane some of whose windows have fired. */
static int add_slow(sql_view *v, cell *c, int64_t p, int64_t first, uint64_t kh,
                    const sql_value *key, const sql_value *args, int64_t ts, uint64_t arrival,
                    sql_view_emit_fn emit, void *ctx)
{
    const int64_t s = v->cfg.advance_ms, size = v->cfg.size_ms;
    uint32_t np = 0, nf;
    while (np < v->k && purge_due(v, first + (int64_t)np * s + size))
        np++;
    for (nf = np; nf < v->k && fire_due(v, first + (int64_t)nf * s + size); nf++)
        ;
    group *grp = c ? c->g : group_find(v, kh, key);
    if (!grp && v->cfg.max_keys && v->groups.used >= v->cfg.max_keys) {
        v->refusals++;
        return SQL_VIEW_REFUSED;
    }
    /* Slots for every live window holding the pane; cells for the pane
     * data and a record per fired window. */
    if (slots_reserve(v, v->k - np) < 0 || cells_reserve(v, 1 + (nf - np)) < 0)
        return -ENOMEM;
    if (!grp && !key_fits(v, key))
        return -EINVAL;
    if (!grp && !(grp = group_new(v, kh, key, false)))
        return -ENOMEM;
    grp->refs++; /* held while its first cell is made */
    for (uint32_t j = np; j < v->k; j++)
        slot_get(v, first + (int64_t)j * s);
    if (!c)
        c = cell_new(v, slot_get(v, p), grp);
    if (!c->has_data) {
        c->has_data = 1;
        c->born = (uint16_t)nf;
    }
    int rc = agg_add(v, cell_state(c), args, ts, arrival);
    /* Re-fire the fired windows, ascending. */
    for (uint32_t j = np; j < nf; j++) {
        int64_t g = first + (int64_t)j * s;
        cell *r = g == p ? c : cell_find(v, g, grp);
        if (!r)
            r = cell_new(v, slot_get(v, g), grp);
        merger mg = {0};
        bool prior;
        merge_group(v, g, grp, &mg, &prior);
        if (!r->rec) {
            /* A group that was in the window when it fired had revision 0
             * then; one new to the fired window fires at revision 0. */
            r->rec = 1;
            r->revision = prior ? 1 : 0;
        } else {
            r->revision++;
        }
        v->late_updates++;
        emit_row(v, grp, merged_state(v, &mg), g, g + size, r->revision, true, ts, emit, ctx);
    }
    group_unref(v, grp);
    v->applied++;
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

static int apply_window(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                        int64_t ts, uint64_t arrival, sql_view_emit_fn emit, void *ctx)
{
    int64_t p, first;
    if (!pane_of(v, ts, &p, &first) || purge_due(v, p + v->cfg.size_ms)) {
        v->late_dropped++;
        return SQL_VIEW_LATE;
    }
    cell *c = cell_lookup_key(v, p, kh, key);
    /* Hot path: the group has data in the pane and all its windows are open. */
    if (c && c->has_data && !fire_due(v, first + v->cfg.size_ms)) {
        v->applied++;
        int rc = agg_add(v, cell_state(c), args, ts, arrival);
        return rc < 0 ? rc : SQL_VIEW_APPLIED;
    }
    return add_slow(v, c, p, first, kh, key, args, ts, arrival, emit, ctx);
}

static void advance_windows(sql_view *v, int64_t old, sql_view_emit_fn emit, void *ctx)
{
    for (uint32_t i = 0; i < v->nslots; i++) {
        int64_t last = v->slots[i].start + v->cfg.size_ms - 1;
        if (old != CF_TIME_NONE && last <= old)
            continue; /* fired before */
        if (last > v->wm)
            break;
        if (emit)
            emit_window(v, i, true, last, emit, ctx);
    }
    uint32_t n = 0;
    while (n < v->nslots && purge_due(v, v->slots[n].start + v->cfg.size_ms)) {
        wslot *sl = &v->slots[n];
        for (cell *c = sl->head; c;) {
            cell *next = c->next;
            cell_destroy(v, c);
            c = next;
        }
        n++;
    }
    if (n) {
        memmove(v->slots, &v->slots[n], (size_t)(v->nslots - n) * sizeof *v->slots);
        v->nslots -= n;
    }
}

/* ---- sessions ------------------------------------------------------------------- */

static inline bool joins(const sql_view *v, const sess *x, int64_t ts)
{
    /* [ts, ts + gap) and [first, last + gap) overlap or touch */
    return sat_add(ts, v->cfg.gap_ms) >= x->first && ts <= sat_add(x->last, v->cfg.gap_ms);
}

static inline uint64_t next_revision(const sess *x)
{
    return (uint64_t)x->revision + x->fired;
}

static void sess_fire(sql_view *v, sess *x, sql_view_emit_fn emit, void *ctx)
{
    if (!x->fired) {
        x->fired = 1;
        v->n_open--;
        v->n_kept++;
    }
    emit_sess(v, x, true, emit, ctx);
}

/* Unlinks x from its group and the heap and frees it (and the group with
 * its last session). */
static void sess_drop(sql_view *v, sess *x)
{
    group *g = x->g;
    if (x->heap_pos != NIL_POS)
        heap_remove(v, x);
    sess **pp = &g->sessions;
    while (*pp != x)
        pp = &(*pp)->next;
    *pp = x->next;
    if (x->fired)
        v->n_kept--;
    else
        v->n_open--;
    sql_agg_fini(v->aggs, sess_state(x));
    sess_release(v, x);
    group_unref(v, g);
}

/* Re-places the heap top until its placed time is its true one, so that it
 * is the true minimum. */
static void *heap_settle_top(sql_view *v)
{
    while (v->heap_n) {
        void *top = v->heap[0];
        int64_t t;
        if (v->cfg.window == SQL_WINDOW_SESSION)
            t = sess_action_at(v, top);
        else
            t = ((group *)top)->last_ts;
        if (t == node_placed(v, top))
            return top;
        if (v->cfg.window == SQL_WINDOW_SESSION)
            ((sess *)top)->placed = t;
        else
            ((group *)top)->placed = t;
        heap_down(v, 0);
    }
    return NULL;
}

/* max_keys reached: closes every session of the group whose next action
 * comes first (open ones fire as final, oldest first) and drops them. */
static void evict_session_group(sql_view *v, sql_view_emit_fn emit, void *ctx)
{
    sess *top = heap_settle_top(v);
    if (!top)
        return;
    group *g = top->g;
    g->refs++;
    while (g->sessions) {
        sess *x = g->sessions;
        if (!x->fired)
            sess_fire(v, x, emit, ctx);
        sess_drop(v, x);
    }
    v->evictions++;
    group_unref(v, g);
}

static int apply_session(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                         int64_t ts, uint64_t arrival, sql_view_emit_fn emit, void *ctx)
{
    group *grp = group_find(v, kh, key);
    sess *a = NULL, *z = NULL;
    for (sess *x = grp ? grp->sessions : NULL; x; x = x->next) {
        if (joins(v, x, ts)) {
            if (!a)
                a = x;
            z = x;
        } else if (a) {
            break;
        }
    }
    if (!a) {
        if (reached(v, sess_purge_at(v, ts))) {
            v->late_dropped++;
            return SQL_VIEW_LATE;
        }
        if (heap_reserve(v) < 0)
            return -ENOMEM;
        sess *x;
        if (!grp) {
            if (!key_fits(v, key))
                return -EINVAL;
            if (v->cfg.max_keys && v->groups.used >= v->cfg.max_keys)
                evict_session_group(v, emit, ctx);
            if (!(grp = group_new(v, kh, key, true)))
                return -ENOMEM;
            x = group_inline_sess(v, grp);
        } else if (grp->sinl == SINL_FREE) {
            grp->sinl = SINL_USED;
            x = group_inline_sess(v, grp);
        } else if (!(x = malloc(v->sess_size))) {
            return -ENOMEM;
        }
        memset(x, 0, sizeof *x);
        x->first = x->last = ts;
        x->g = grp;
        grp->refs++;
        sql_agg_init(v->aggs, sess_state(x));
        int rc = agg_add(v, sess_state(x), args, ts, arrival);
        sess **pp = &grp->sessions;
        while (*pp && (*pp)->first < ts)
            pp = &(*pp)->next;
        x->next = *pp;
        *pp = x;
        x->placed = sess_fire_at(v, ts);
        v->n_open++;
        heap_push(v, x);
        if (reached(v, sess_fire_at(v, ts)))
            sess_fire(v, x, emit, ctx); /* placed stays earlier than purging: lazy */
        v->applied++;
        return rc < 0 ? rc : SQL_VIEW_APPLIED;
    }
    /* Merge the run [a, z] into a: the others leave the heap first. */
    bool was_fired = false;
    uint64_t rev = next_revision(a);
    was_fired |= a->fired;
    int rc = 0;
    while (a != z) {
        sess *o = a->next;
        if (next_revision(o) > rev)
            rev = next_revision(o);
        was_fired |= o->fired;
        heap_remove(v, o);
        int r = sql_agg_merge(v->aggs, sess_state(a), sess_state(o));
        if (r < 0)
            rc = r;
        a->last = o->last;
        a->next = o->next;
        if (o == z)
            z = a;
        if (o->fired)
            v->n_kept--;
        else
            v->n_open--;
        sql_agg_fini(v->aggs, sess_state(o));
        sess_release(v, o);
        grp->refs--; /* a still holds the group */
    }
    int r = agg_add(v, sess_state(a), args, ts, arrival);
    if (r < 0)
        rc = r;
    if (ts < a->first)
        a->first = ts;
    if (ts > a->last)
        a->last = ts;
    a->revision = rev > UINT32_MAX ? UINT32_MAX : (uint32_t)rev;
    if (a->fired) {
        a->fired = 0;
        v->n_kept--;
        v->n_open++;
    }
    if (was_fired)
        v->late_updates++;
    int64_t t = sess_fire_at(v, a->last);
    if (t < a->placed) {
        a->placed = t;
        heap_up(v, a->heap_pos);
    }
    if (reached(v, t))
        sess_fire(v, a, emit, ctx);
    v->applied++;
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

static void advance_sessions(sql_view *v, sql_view_emit_fn emit, void *ctx)
{
    while (v->heap_n) {
        sess *x = v->heap[0];
        if (x->placed > v->wm)
            break;
        int64_t t = sess_action_at(v, x);
        if (t != x->placed) { /* placed early: its true time may still be ahead */
            x->placed = t;
            heap_down(v, 0);
            continue;
        }
        if (!x->fired) {
            sess_fire(v, x, emit, ctx);
            x->placed = sess_purge_at(v, x->last);
            heap_down(v, 0);
        } else {
            sess_drop(v, x);
        }
    }
}

/* ---- running rows ----------------------------------------------------------------- */

static void running_drop(sql_view *v, group *g)
{
    heap_remove(v, g);
    v->n_open--;
    group_unref(v, g);
}

static int apply_running(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                         int64_t ts, uint64_t arrival)
{
    group *g = group_find(v, kh, key);
    if (!g) {
        if (!key_fits(v, key))
            return -EINVAL;
        if (heap_reserve(v) < 0)
            return -ENOMEM;
        if (v->cfg.max_keys && v->groups.used >= v->cfg.max_keys) {
            group *old = heap_settle_top(v);
            if (old) {
                running_drop(v, old);
                v->evictions++;
            }
        }
        if (!(g = group_new(v, kh, key, false)))
            return -ENOMEM;
        g->refs = 1;
        g->last_ts = g->placed = ts;
        heap_push(v, g);
        v->n_open++;
    } else if (ts > g->last_ts) {
        g->last_ts = ts; /* lazy: re-placed when it surfaces */
    }
    v->applied++;
    int rc = agg_add(v, group_state(v, g), args, ts, arrival);
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

static void advance_running(sql_view *v)
{
    int64_t ttl = v->cfg.state_ttl_ms;
    if (ttl <= 0 || v->wm < INT64_MIN + ttl)
        return;
    int64_t limit = v->wm - ttl; /* forget when last_ts + ttl <= W */
    while (v->heap_n) {
        group *g = v->heap[0];
        if (g->placed > limit)
            break;
        if (g->last_ts != g->placed) {
            g->placed = g->last_ts;
            heap_down(v, 0);
            continue;
        }
        running_drop(v, g);
        v->expired++;
    }
}

/* ---- public API --------------------------------------------------------------------- */

static bool config_valid(const sql_view_config *c)
{
    if (c->nkeys > MAX_KEYS || !c->aggs || c->naggs == 0 || c->naggs > 64 || c->grace_ms < 0 ||
        c->state_ttl_ms < 0 || (unsigned)c->emit > SQL_EMIT_FINAL)
        return false;
    switch (c->window) {
    case SQL_WINDOW_NONE: return true;
    case SQL_WINDOW_TUMBLING: return c->size_ms > 0;
    case SQL_WINDOW_HOPPING:
        return c->size_ms > 0 && c->advance_ms > 0 && c->advance_ms <= c->size_ms &&
               c->size_ms % c->advance_ms == 0 && c->size_ms / c->advance_ms <= MAX_HOPS;
    case SQL_WINDOW_SESSION: return c->gap_ms > 0;
    default: return false;
    }
}

sql_view *sql_view_new(const sql_view_config *cfg)
{
    if (!cfg || !config_valid(cfg))
        return NULL;
    sql_view *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->cfg = *cfg;
    memcpy(v->specs, cfg->aggs, cfg->naggs * sizeof *cfg->aggs);
    v->cfg.aggs = v->specs;
    if (cfg->window != SQL_WINDOW_NONE)
        v->cfg.state_ttl_ms = 0;
    if (cfg->window == SQL_WINDOW_TUMBLING)
        v->cfg.advance_ms = cfg->size_ms;
    v->wm = CF_TIME_NONE;
    v->aggs = sql_agg_set_new(v->specs, cfg->naggs);
    v->res = calloc(cfg->naggs, sizeof *v->res);
    if (!v->aggs || !v->res) {
        sql_view_free(v);
        return NULL;
    }
    v->state_size = sql_agg_state_size(v->aggs);
    v->cell_size = sizeof(cell) + v->state_size;
    v->sess_size = ((sizeof(sess) + 7) & ~(size_t)7) + v->state_size;
    v->k = cfg->window == SQL_WINDOW_HOPPING ? (uint32_t)(cfg->size_ms / cfg->advance_ms) : 1;
    if (!(v->scratch = malloc(v->state_size ? v->state_size : 8))) {
        sql_view_free(v);
        return NULL;
    }
    sql_agg_init(v->aggs, v->scratch);
    return v;
}

void sql_view_free(sql_view *v)
{
    if (!v)
        return;
    if (v->aggs) {
        for (uint32_t i = 0; i < v->nslots; i++)
            for (cell *c = v->slots[i].head; c; c = c->next)
                sql_agg_fini(v->aggs, cell_state(c));
        if (v->cfg.window == SQL_WINDOW_SESSION)
            for (uint32_t i = 0; i < v->heap_n; i++) {
                sess *x = v->heap[i];
                sql_agg_fini(v->aggs, sess_state(x));
                if (!(x->g->sinl == SINL_USED && x == group_inline_sess(v, x->g)))
                    free(x); /* an inline one goes with its group */
            }
        if (v->groups.s)
            for (uint32_t i = 0; i <= v->groups.mask; i++) {
                group *g = v->groups.s[i].p;
                if (!g)
                    continue;
                if (v->cfg.window == SQL_WINDOW_NONE)
                    sql_agg_fini(v->aggs, group_state(v, g));
                if (v->cfg.window == SQL_WINDOW_SESSION && g->sinl != SINL_NONE) {
                    if (group_block_size(v, g) > BLK_CLASSES * 16)
                        free(g); /* else it goes with its chunk */
                } else {
                    free(g);
                }
            }
    }
    blk_free_all(v);
    for (uint32_t i = 0; i < v->nslabs; i++)
        free(v->slabs[i]);
    free(v->slabs);
    free(v->slots);
    cf_kv_table_free(v->groups.s, pmap_bytes(&v->groups));
    free(v->cmap);
    free(v->free_idx);
    free(v->heap);
    free(v->heap_key);
    free(v->res);
    if (v->scratch) {
        sql_agg_fini(v->aggs, v->scratch);
        free(v->scratch);
    }
    free(v->gcell);
    free(v->gnext);
    free(v->sort);
    cf_buf_free(&v->text);
    sql_agg_set_free(v->aggs);
    free(v);
}

void sql_view_advance(sql_view *v, int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    if (wm == CF_TIME_NONE || (v->wm != CF_TIME_NONE && wm <= v->wm))
        return;
    int64_t old = v->wm;
    v->wm = wm;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE: advance_running(v); break;
    case SQL_WINDOW_SESSION: advance_sessions(v, emit, ctx); break;
    default: advance_windows(v, old, emit, ctx); break;
    }
}

uint64_t sql_view_key_hash(const sql_view *v, const sql_value *key)
{
    return key_hash(v, key);
}

void sql_view_prefetch(const sql_view *v, const sql_value *key, int64_t rowtime)
{
    sql_view_prefetch_hashed(v, key_hash(v, key), rowtime);
}

void sql_view_prefetch_hashed(const sql_view *v, uint64_t kh, int64_t rowtime)
{
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        int64_t p, first;
        if (v->cmap && pane_of(v, rowtime, &p, &first))
            __builtin_prefetch(&v->cmap[(uint32_t)cell_hash(p, kh) & v->cmask]);
    } else if (v->groups.s) {
        __builtin_prefetch(&v->groups.s[(uint32_t)kh & v->groups.mask]);
    }
}

/* Probes a few slots only: a hint must stay cheap, and the tag or hash
 * match found first is nearly always the one. */
#define STEP_PROBES 4

void sql_view_prefetch_step(const sql_view *v, uint64_t kh, const uint64_t *arg_hash,
                            int64_t rowtime, unsigned step)
{
    if (step == 0) {
        sql_view_prefetch_hashed(v, kh, rowtime);
        return;
    }
    if (step > 3)
        return;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        int64_t p, first;
        if (!v->cmap || !pane_of(v, rowtime, &p, &first))
            return;
        uint64_t h = cell_hash(p, kh);
        uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & v->cmask;
        for (int n = 0; n < STEP_PROBES; n++, i = (i + 1) & v->cmask) {
            const cslot *sl = &v->cmap[i];
            if (sl->idx == NIL_IDX)
                return;
            if (sl->tag != tag)
                continue;
            const cell *c = cell_at(v, sl->idx);
            if (step == 1) {
                /* the header and the aggregate state after it */
                __builtin_prefetch(c);
                __builtin_prefetch((const char *)c + v->cell_size - 1);
            } else if (step == 2) {
                if (c->g) {
                    __builtin_prefetch(c->g);
                    __builtin_prefetch((const char *)c->g + 64);
                }
                sql_agg_prefetch(v->aggs, cell_state(c), NULL, 0);
            } else {
                sql_agg_prefetch(v->aggs, cell_state(c), arg_hash, 1);
            }
            return;
        }
        return;
    }
    if (!v->groups.s)
        return;
    uint32_t i = (uint32_t)kh & v->groups.mask;
    for (int n = 0; n < STEP_PROBES; n++, i = (i + 1) & v->groups.mask) {
        const pslot *sl = &v->groups.s[i];
        if (!sl->p)
            return;
        if (sl->hash != kh)
            continue;
        const group *g = sl->p;
        if (step == 1 && v->cfg.window == SQL_WINDOW_SESSION) {
            /* The group and the inline session after its key (short key
             * strings assumed: a long key's session is loaded at step 2). */
            const char *x = (const char *)g;
            size_t span = group_state_off(v->cfg.nkeys) + 16 + v->sess_size;
            for (size_t off = 0; off < span; off += 64)
                __builtin_prefetch(x + off);
            __builtin_prefetch(x + span - 1);
        } else if (step == 1) {
            __builtin_prefetch(g);
            __builtin_prefetch((const char *)g + 64);
        } else if (step == 2 && v->cfg.window == SQL_WINDOW_SESSION && g->sessions &&
                   (g->sinl == SINL_NONE || g->sessions != group_inline_sess(v, g) ||
                    group_strs(v, g) > 16)) {
            /* The whole record: header, then the aggregate state (the
             * built-in sessions' LATEST lies past the second line). */
            const char *x = (const char *)g->sessions;
            for (size_t off = 0; off < v->sess_size; off += 64)
                __builtin_prefetch(x + off);
            __builtin_prefetch(x + v->sess_size - 1);
        }
        return;
    }
}

int sql_view_apply(sql_view *v, const sql_value *key, const sql_value *args, int64_t rowtime,
                   uint64_t arrival, int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    return sql_view_apply_hashed(v, key, key_hash(v, key), args, NULL, rowtime, arrival, wm,
                                 emit, ctx);
}

int sql_view_apply_hashed(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                          const uint64_t *arg_hash, int64_t rowtime, uint64_t arrival,
                          int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    /* The argument strings are usually cold (a user id from a large
     * population): ask for them now, so the misses overlap the key lookup
     * instead of following it. */
    if (args)
        for (uint32_t i = 0; i < v->cfg.naggs; i++)
            if (is_text(args[i].type))
                __builtin_prefetch(args[i].u.s);
    if (wm != CF_TIME_NONE && wm > v->wm)
        sql_view_advance(v, wm, emit, ctx);
    /* Only the applies below read the caller's hashes: advance() merges
     * states, which carry their hashes with them. */
    int rc;
    v->arg_hash = args ? arg_hash : NULL;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE: rc = apply_running(v, key, kh, args, rowtime, arrival); break;
    case SQL_WINDOW_SESSION:
        rc = apply_session(v, key, kh, args, rowtime, arrival, emit, ctx);
        break;
    default: rc = apply_window(v, key, kh, args, rowtime, arrival, emit, ctx); break;
    }
    v->arg_hash = NULL;
    return rc;
}

static int cmp_sess_fire(const sql_view *v, const void *a, const void *b)
{
    const sess *x = a, *y = b;
    /* open sessions only: the action is firing */
    int64_t s = x->last, t = y->last;
    if (s != t)
        return s < t ? -1 : 1;
    if (x->g != y->g) {
        int c = key_cmp(x->g->key, y->g->key, v->cfg.nkeys);
        if (c)
            return c;
    }
    return (x->first > y->first) - (x->first < y->first);
}

size_t sql_view_foreach_open(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    size_t n = 0;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        for (uint32_t i = 0; i < v->nslots; i++) {
            if (fire_due(v, v->slots[i].start + v->cfg.size_ms))
                continue;
            n += emit_window(v, i, false, now, emit, ctx);
        }
        return n;
    }
    if (sort_reserve(v, v->heap_n) < 0)
        return 0;
    for (uint32_t i = 0; i < v->heap_n; i++)
        if (v->cfg.window == SQL_WINDOW_NONE || !((sess *)v->heap[i])->fired)
            v->sort[n++] = v->heap[i];
    if (v->cfg.window == SQL_WINDOW_SESSION) {
        sort_ptrs(v, v->sort, n, cmp_sess_fire);
        for (size_t i = 0; i < n; i++)
            emit_sess(v, v->sort[i], false, emit, ctx);
    } else {
        sort_ptrs(v, v->sort, n, cmp_group_key);
        for (size_t i = 0; i < n; i++) {
            const group *g = v->sort[i];
            emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit, ctx);
        }
    }
    return n;
}

size_t sql_view_scan(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    if (v->cfg.window != SQL_WINDOW_NONE || !v->groups.s)
        return 0;
    size_t n = 0;
    for (uint32_t i = 0; i <= v->groups.mask; i++) {
        const group *g = v->groups.s[i].p;
        if (!g)
            continue;
        emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit, ctx);
        n++;
    }
    return n;
}

typedef struct forget_ctx {
    sql_view_drop_fn drop;
    void *ctx;
    bool verdict;
} forget_ctx;

static void forget_one(void *ctx, const sql_view_result *r)
{
    forget_ctx *f = ctx;
    f->verdict = f->drop(f->ctx, r);
}

size_t sql_view_forget(sql_view *v, int64_t now, sql_view_drop_fn drop, void *ctx)
{
    if (v->cfg.window != SQL_WINDOW_NONE || !v->groups.s || v->groups.used == 0)
        return 0;
    /* Chosen first, dropped after: dropping reshapes the group table. */
    group **list = malloc(v->groups.used * sizeof *list);
    if (!list)
        return 0;   /* nothing forgotten; a later call tries again */
    size_t k = 0;
    forget_ctx f = {drop, ctx, false};
    for (uint32_t i = 0; i <= v->groups.mask; i++) {
        group *g = v->groups.s[i].p;
        if (!g)
            continue;
        f.verdict = false;
        emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, forget_one, &f);
        if (f.verdict)
            list[k++] = g;
    }
    for (size_t i = 0; i < k; i++)
        running_drop(v, list[i]);
    free(list);
    return k;
}

size_t sql_view_lookup(const sql_view *v, const sql_value *key, int64_t now,
                       sql_view_emit_fn emit, void *ctx)
{
    group *g = group_find(v, key_hash(v, key), key);
    if (!g)
        return 0;
    size_t n = 0;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE:
        emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit, ctx);
        return 1;
    case SQL_WINDOW_SESSION:
        for (const sess *x = g->sessions; x; x = x->next)
            if (!x->fired) {
                emit_sess(v, x, false, emit, ctx);
                n++;
            }
        return n;
    default:
        for (uint32_t i = 0; i < v->nslots; i++) {
            int64_t w = v->slots[i].start;
            if (fire_due(v, w + v->cfg.size_ms))
                continue;
            merger mg = {0};
            bool prior;
            merge_group(v, w, g, &mg, &prior);
            if (mg.n) {
                emit_row(v, g, merged_state(v, &mg), w, w + v->cfg.size_ms, 0, false, now, emit,
                         ctx);
                n++;
            }
        }
        return n;
    }
}

void sql_view_stats_get(const sql_view *v, sql_view_stats *ret)
{
    sql_view_stats s = {0};
    s.groups = v->groups.used;
    s.open = v->n_open;
    s.kept = v->n_kept;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        /* (window, group) pairs, counted from the panes: O(state). */
        s.open = s.kept = 0;
        for (uint32_t i = 0; i < v->nslots; i++) {
            int ng = gather(v, i);
            size_t n = ng > 0 ? (size_t)ng : 0;
            if (fire_due(v, v->slots[i].start + v->cfg.size_ms))
                s.kept += n;
            else
                s.open += n;
        }
    }
    s.applied = v->applied;
    s.late_dropped = v->late_dropped;
    s.late_updates = v->late_updates;
    s.evictions = v->evictions;
    s.refusals = v->refusals;
    s.expired = v->expired;
    size_t b = sizeof *v + pmap_bytes(&v->groups);
    if (v->cmap)
        b += ((size_t)v->cmask + 1) * sizeof(cslot);
    b += (size_t)v->nslabs * SLAB * sizeof(uint32_t); /* free_idx */
    b += (size_t)v->nslabs * (SLAB * v->cell_size + sizeof(char *));
    b += (size_t)v->slots_cap * sizeof(wslot);
    b += (size_t)v->heap_cap * (sizeof(void *) + sizeof(int64_t));
    b += v->sort_cap * sizeof(void *) + v->text.cap + v->cfg.naggs * sizeof(sql_value);
    b += (size_t)v->gcap * (sizeof *v->gcell + sizeof *v->gnext);
    b += v->state_size + sql_agg_bytes(v->aggs, v->scratch);
    if (v->groups.s)
        for (uint32_t i = 0; i <= v->groups.mask; i++) {
            const group *g = v->groups.s[i].p;
            if (!g)
                continue;
            b += group_state_off(v->cfg.nkeys);
            for (uint32_t k = 0; k < v->cfg.nkeys; k++)
                if (is_text(g->key[k].type))
                    b += g->key[k].len;
            if (v->cfg.window == SQL_WINDOW_NONE)
                b += v->state_size + sql_agg_bytes(v->aggs, group_state(v, g));
            if (v->cfg.window == SQL_WINDOW_SESSION) {
                const sess *in = g->sinl != SINL_NONE ? group_inline_sess(v, g) : NULL;
                if (in) /* the block's slot, used or not */
                    b += align8(group_strs(v, g)) - group_strs(v, g) + v->sess_size;
                for (const sess *x = g->sessions; x; x = x->next)
                    b += (x == in ? 0 : v->sess_size) + sql_agg_bytes(v->aggs, sess_state(x));
            }
        }
    for (uint32_t i = 0; i < v->nslots; i++)
        for (const cell *c = v->slots[i].head; c; c = c->next)
            b += sql_agg_bytes(v->aggs, cell_state(c));
    s.bytes = b;
    *ret = s;
}

void sql_view_counters(const sql_view *v, sql_view_stats *ret)
{
    *ret = (sql_view_stats){
        .groups = v->groups.used,
        .applied = v->applied,
        .late_dropped = v->late_dropped,
        .late_updates = v->late_updates,
        .evictions = v->evictions,
        .refusals = v->refusals,
        .expired = v->expired,
    };
}

size_t sql_view_groups(const sql_view *v)
{
    return v->groups.used;
}

int sql_view_result_sketch(const sql_view *v, const sql_view_result *r, uint32_t agg,
                           cf_buf *out)
{
    if (!r->state)
        return -EINVAL;
    return sql_agg_sketch_save(v->aggs, r->state, agg, out);
}

int64_t sql_view_watermark(const sql_view *v)
{
    return v->wm;
}

const sql_view_config *sql_view_get_config(const sql_view *v)
{
    return &v->cfg;
}

/* ---- save / load --------------------------------------------------------------------
 * u32 magic, u8 version, u8 window, i64 size, advance, gap, grace, ttl,
 * u32 nkeys, u32 naggs, naggs x (u8 kind, i64 param), i64 watermark,
 * u32 records, then per record the key (nkeys values, u8 type + payload)
 * and:  running: i64 last_ts, agg state;  window: one record per cell,
 * i64 start, u32 revision, u8 flags (1 pane data, 2 revision record),
 * u16 born, agg state;  session: u32 sessions, each i64
 * first, i64 last, u32 revision, u8 fired, agg state. */


static void put_header(const sql_view *v, cf_buf *out)
{
    cf_buf_put_u32(out, SAVE_MAGIC);
    cf_buf_put_u8(out, SAVE_VERSION);
    cf_buf_put_u8(out, (uint8_t)v->cfg.window);
    cf_buf_put_i64(out, v->cfg.size_ms);
    cf_buf_put_i64(out, v->cfg.advance_ms);
    cf_buf_put_i64(out, v->cfg.gap_ms);
    cf_buf_put_i64(out, v->cfg.grace_ms);
    cf_buf_put_i64(out, v->cfg.state_ttl_ms);
    cf_buf_put_u32(out, v->cfg.nkeys);
    cf_buf_put_u32(out, v->cfg.naggs);
    for (uint32_t i = 0; i < v->cfg.naggs; i++) {
        cf_buf_put_u8(out, (uint8_t)v->specs[i].kind);
        cf_buf_put_i64(out, v->specs[i].param);
    }
    cf_buf_put_i64(out, v->wm);
}

static void put_key(const sql_view *v, const group *g, cf_buf *out)
{
    for (uint32_t i = 0; i < v->cfg.nkeys; i++)
        sql_value_save(out, g->key[i]);
}

int sql_view_save(const sql_view *v, sql_view_keep_fn keep, void *ctx, cf_buf *out)
{
    put_header(v, out);
    size_t count_at = out->len;
    cf_buf_put_u32(out, 0);
    uint32_t records = 0;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        for (uint32_t i = 0; i < v->nslots; i++)
            for (const cell *c = v->slots[i].head; c; c = c->next) {
                if (keep && !keep(ctx, c->g->key, v->cfg.nkeys))
                    continue;
                put_key(v, c->g, out);
                cf_buf_put_i64(out, c->start);
                cf_buf_put_u32(out, c->revision);
                cf_buf_put_u8(out, (uint8_t)(c->has_data | c->rec << 1));
                cf_buf_put_u16(out, c->born);
                sql_agg_save(v->aggs, cell_state(c), out);
                records++;
            }
    } else if (v->groups.s) {
        for (uint32_t i = 0; i <= v->groups.mask; i++) {
            const group *g = v->groups.s[i].p;
            if (!g || (keep && !keep(ctx, g->key, v->cfg.nkeys)))
                continue;
            put_key(v, g, out);
            if (v->cfg.window == SQL_WINDOW_NONE) {
                cf_buf_put_i64(out, g->last_ts);
                sql_agg_save(v->aggs, group_state(v, g), out);
            } else {
                uint32_t n = 0;
                for (const sess *x = g->sessions; x; x = x->next)
                    n++;
                cf_buf_put_u32(out, n);
                for (const sess *x = g->sessions; x; x = x->next) {
                    cf_buf_put_i64(out, x->first);
                    cf_buf_put_i64(out, x->last);
                    cf_buf_put_u32(out, x->revision);
                    cf_buf_put_u8(out, x->fired);
                    sql_agg_save(v->aggs, sess_state(x), out);
                }
            }
            records++;
        }
    }
    if (out->oom)
        return -ENOMEM;
    for (int b = 0; b < 4; b++)
        out->data[count_at + (size_t)b] = (uint8_t)(records >> (8 * b));
    return 0;
}

/* Windows of a pane at q that have fired under the current watermark. */
static uint32_t fired_windows(const sql_view *v, int64_t q)
{
    int64_t first = q - (v->cfg.size_ms - v->cfg.advance_ms);
    uint32_t nf = 0;
    while (nf < v->k && fire_due(v, first + (int64_t)nf * v->cfg.advance_ms + v->cfg.size_ms))
        nf++;
    return nf;
}

/* One cell: rejects a cell with neither data nor record, a record on a
 * window that has not fired, a birth after the present, a position off
 * the grid or past purging, and a cell seen twice. A data cell gets the
 * slots of every live window holding its pane. */
static int load_cell(sql_view *v, group *g, cf_reader *in)
{
    int64_t start, end, p = 0, first = 0;
    uint32_t rev;
    uint8_t flags;
    uint16_t born;
    int64_t adv = v->cfg.advance_ms;
    if (!cf_get_i64(in, &start) || !cf_get_u32(in, &rev) || !cf_get_u8(in, &flags) ||
        !cf_get_u16(in, &born) || flags == 0 || flags > 3 ||
        __builtin_add_overflow(start, v->cfg.size_ms, &end) ||
        __builtin_mul_overflow(cf_floor_div(start, adv), adv, &p) || p != start ||
        purge_due(v, end) ||
        ((flags & 2) && !fire_due(v, end)) || (!(flags & 2) && rev) ||
        (!(flags & 1) && born) || cell_find(v, start, g))
        return -EINVAL;
    bool data = flags & 1;
    if (data && (!pane_of(v, start, &p, &first) || born > fired_windows(v, start)))
        return -EINVAL;
    if (slots_reserve(v, v->k + 1) < 0 || cells_reserve(v, 1) < 0)
        return -ENOMEM;
    if (data)
        for (uint32_t j = 0; j < v->k; j++)
            if (!purge_due(v, first + (int64_t)j * adv + v->cfg.size_ms))
                slot_get(v, first + (int64_t)j * adv);
    cell *c = cell_new(v, slot_get(v, start), g);
    c->revision = rev;
    c->has_data = data;
    c->rec = (flags & 2) != 0;
    c->born = born;
    sql_agg_fini(v->aggs, cell_state(c));
    return sql_agg_load(v->aggs, cell_state(c), in);
}

static int load_sessions(sql_view *v, group *g, cf_reader *in)
{
    uint32_t n;
    if (!cf_get_u32(in, &n) || n == 0 || g->sessions)
        return -EINVAL;
    sess **tail = &g->sessions;
    const sess *prev = NULL;
    for (uint32_t i = 0; i < n; i++) {
        int64_t first, last;
        uint32_t rev;
        uint8_t fired;
        if (!cf_get_i64(in, &first) || !cf_get_i64(in, &last) || !cf_get_u32(in, &rev) ||
            !cf_get_u8(in, &fired) || fired > 1 || first > last ||
            (prev && sat_add(prev->last, v->cfg.gap_ms) >= first) ||
            (!fired && reached(v, sess_fire_at(v, last))) ||
            (fired && reached(v, sess_purge_at(v, last))))
            return -EINVAL;
        if (heap_reserve(v) < 0)
            return -ENOMEM;
        sess *x = malloc(v->sess_size);
        if (!x)
            return -ENOMEM;
        memset(x, 0, sizeof *x);
        x->first = first;
        x->last = last;
        x->revision = rev;
        x->fired = fired;
        x->g = g;
        g->refs++;
        *tail = x;
        tail = &x->next;
        x->placed = sess_action_at(v, x);
        heap_push(v, x);
        if (fired)
            v->n_kept++;
        else
            v->n_open++;
        int rc = sql_agg_load(v->aggs, sess_state(x), in);
        if (rc < 0)
            return rc;
        prev = x;
    }
    return 0;
}

int sql_view_load(sql_view *v, cf_reader *in)
{
    cf_buf want = {0};
    put_header(v, &want);
    if (want.oom) {
        cf_buf_free(&want);
        return -ENOMEM;
    }
    /* The header must match byte for byte, except the watermark (last 8). */
    size_t cfg_len = want.len - 8;
    const uint8_t *p = in->p;
    bool same = in->left >= want.len && memcmp(p, want.data, cfg_len) == 0;
    cf_buf_free(&want);
    if (!same)
        return -EINVAL;
    cf_reader_init(in, p + cfg_len, in->left - cfg_len);
    int64_t wm;
    uint32_t records;
    if (!cf_get_i64(in, &wm) || !cf_get_u32(in, &records))
        return -EINVAL;
    if (v->wm != CF_TIME_NONE && v->wm != wm)
        return -EINVAL;
    v->wm = wm;
    sql_value key[MAX_KEYS];
    for (uint32_t r = 0; r < records; r++) {
        for (uint32_t i = 0; i < v->cfg.nkeys; i++)
            if (!sql_value_load(in, MAX_KEY_STR, &key[i]))
                return -EINVAL;
        uint64_t kh = key_hash(v, key);
        group *g = group_find(v, kh, key);
        bool windowed = v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING;
        if (g && !windowed)
            return -EINVAL; /* a group seen twice */
        if (!g && !key_fits(v, key))
            return -EINVAL;
        if (!g && !(g = group_new(v, kh, key, false)))
            return -ENOMEM;
        g->refs++; /* held while loading */
        int rc;
        if (windowed) {
            rc = load_cell(v, g, in);
        } else if (v->cfg.window == SQL_WINDOW_SESSION) {
            rc = load_sessions(v, g, in);
        } else {
            rc = cf_get_i64(in, &g->last_ts) ? 0 : -EINVAL;
            if (rc == 0) {
                g->placed = g->last_ts;
                sql_agg_fini(v->aggs, group_state(v, g));
                rc = sql_agg_load(v->aggs, group_state(v, g), in);
            }
            if (rc == 0 && heap_reserve(v) == 0) {
                heap_push(v, g);
                v->n_open++;
                g->refs++;
            } else if (rc == 0) {
                rc = -ENOMEM;
            }
        }
        group_unref(v, g);
        if (rc < 0)
            return rc;
    }
    return 0;
}
