#include "cf_winop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_assigner.h"
#include "cf_hash.h"
#include "cf_hll.h"
#include "cf_time.h"

/* Layout.
 * - Pages are interned: one heap block per distinct page_url held by any
 *   window, refcounted by the (window, page) entries that point at it, so a
 *   URL's bytes are stored once however many windows it is in.
 * - Entries ((window, page) state) live in fixed chunks that never move, so
 *   windows can hold plain pointers to them; an open-addressing map keyed
 *   by (window start, page) finds them. Once an entry exists, adding an
 *   event to it allocates nothing (until its user set outgrows the inline
 *   slots).
 * - Windows (one per start) keep the list of their entries and sit in one
 *   of two min-heaps by start: not yet fired, or fired and kept. All windows
 *   of one operator have the same size, so order by start is order by end;
 *   advance() only looks at heap tops, so it costs nothing when nothing is
 *   due. */

#define NIL UINT32_MAX
#define ENTRY_CHUNK_SHIFT 8
#define ENTRY_CHUNK (1u << ENTRY_CHUNK_SHIFT)
#define INLINE_USERS 2
#define USERS_IN_HLL 0xff
#define PAGE_SEED 0x636c69636b666c6fULL
#define SAVE_MAGIC 0x31574643u /* "CFW1" */
/* Bounds on what a snapshot may claim, so a corrupt one cannot make load()
 * allocate without limit before the input runs out. */
#define MAX_PAGE_LEN (1u << 20)

typedef struct page {
    uint64_t hash;
    uint32_t refs;      /* entries pointing here */
    uint32_t len;
    uint32_t idx;       /* position in op->pages */
    char bytes[];       /* len bytes + NUL */
} page;

typedef struct entry {
    int64_t start;
    page *pg;           /* NULL while the slot is free */
    uint64_t count;
    union {
        uint64_t inl[INLINE_USERS];
        struct {
            cf_hll *hll;
            size_t mem; /* cf_hll_memory(hll) as last accounted */
        } s;
    } users;
    uint32_t revision;
    uint32_t idx;       /* own index; while free, the next free index */
    uint8_t nusers;     /* 0..INLINE_USERS inline, or USERS_IN_HLL */
} entry;

typedef struct window {
    int64_t start;
    entry **ents;
    uint32_t n, cap;
    uint32_t next_free; /* free list link while unused */
    bool used;
    bool fired;
} window;

/* Open addressing with linear probing; tag = high half of the hash. */
typedef struct slot {
    uint32_t idx;
    uint32_t tag;
} slot;

typedef struct omap {
    slot *slots;
    uint32_t mask;      /* capacity - 1; capacity 0 while slots == NULL */
    uint32_t used;
} omap;

typedef struct heap {
    uint32_t *a;
    uint32_t n, cap;
} heap;

struct cf_winop {
    cf_winop_config cfg;
    int64_t wm;
    cf_interval *scratch;   /* size/slide windows of one event */
    uint32_t per_event;

    entry **chunks;
    uint32_t nchunks;
    uint32_t entry_free;
    omap emap;

    page **pages;
    uint32_t pages_cap;
    uint32_t *page_free;    /* stack of free indices into pages */
    uint32_t npage_free;
    omap pmap;

    window *wins;
    uint32_t wins_cap;
    uint32_t win_free;
    omap wmap;

    heap open, fired;
    size_t open_pairs, kept_pairs;
    size_t page_bytes, ents_bytes, hll_bytes;
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

static inline entry *entry_at(const cf_winop *op, uint32_t idx)
{
    return &op->chunks[idx >> ENTRY_CHUNK_SHIFT][idx & (ENTRY_CHUNK - 1)];
}

static inline uint64_t entry_hash(int64_t start, const page *pg)
{
    return mix64(pg->hash ^ ((uint64_t)start * 0x9e3779b97f4a7c15ULL));
}

static inline uint64_t window_hash(int64_t start)
{
    return mix64((uint64_t)start ^ 0x5bd1e9955bd1e995ULL);
}

/* ---- time rules ------------------------------------------------------- */

/* end - 1 never overflows (end > start >= INT64_MIN). */
static inline bool fire_due(const cf_winop *op, int64_t end)
{
    return op->wm != CF_TIME_NONE && end - 1 <= op->wm;
}

/* W >= end - 1 + lateness, written as end - 1 <= W - lateness so that
 * nothing overflows: when W - lateness is below INT64_MIN, no window is
 * due. */
static inline bool purge_due(const cf_winop *op, int64_t end)
{
    if (op->wm == CF_TIME_NONE || op->wm < INT64_MIN + op->cfg.allowed_lateness_ms)
        return false;
    return end - 1 <= op->wm - op->cfg.allowed_lateness_ms;
}

/* ---- open-addressing map ---------------------------------------------- */

typedef uint64_t (*hash_of_fn)(const cf_winop *op, uint32_t idx);

static uint64_t entry_hash_of(const cf_winop *op, uint32_t idx)
{
    const entry *e = entry_at(op, idx);
    return entry_hash(e->start, e->pg);
}

static uint64_t page_hash_of(const cf_winop *op, uint32_t idx)
{
    return op->pages[idx]->hash;
}

static uint64_t window_hash_of(const cf_winop *op, uint32_t idx)
{
    return window_hash(op->wins[idx].start);
}

static void map_place(omap *m, uint64_t h, uint32_t idx)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->slots[i].idx != NIL)
        i = (i + 1) & m->mask;
    m->slots[i].idx = idx;
    m->slots[i].tag = (uint32_t)(h >> 32);
}

/* Makes room for one more key (load factor <= 3/4). O(n) when it grows. */
static int map_reserve(const cf_winop *op, omap *m, hash_of_fn hash_of)
{
    uint32_t cap = m->slots ? m->mask + 1 : 0;
    if ((uint64_t)(m->used + 1) * 4 <= (uint64_t)cap * 3)
        return 0;
    if (cap >= (1u << 31))
        return -ENOMEM;
    uint32_t ncap = cap ? cap * 2 : 16;
    slot *s = malloc((size_t)ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    for (uint32_t i = 0; i < ncap; i++)
        s[i].idx = NIL;
    omap nm = {s, ncap - 1, m->used};
    for (uint32_t i = 0; i < cap; i++)
        if (m->slots[i].idx != NIL)
            map_place(&nm, hash_of(op, m->slots[i].idx), m->slots[i].idx);
    free(m->slots);
    *m = nm;
    return 0;
}

/* Removes idx (stored under hash h) with backward-shift deletion, which
 * keeps probe chains intact without tombstones. */
static void map_remove(const cf_winop *op, omap *m, uint64_t h, uint32_t idx, hash_of_fn hash_of)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->slots[i].idx != idx)
        i = (i + 1) & m->mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (m->slots[j].idx == NIL)
            break;
        uint32_t home = (uint32_t)hash_of(op, m->slots[j].idx) & m->mask;
        /* Move j back to the hole unless its home lies in (i, j]. */
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].idx = NIL;
    m->used--;
}

/* ---- heaps of window indices, keyed by window start --------------------- */

/* Both heaps keep room for every window, so that moving a window from the
 * open heap to the fired one in advance() can never fail. */
static int heap_reserve(heap *hp, uint32_t want)
{
    if (want <= hp->cap)
        return 0;
    uint32_t ncap = hp->cap ? hp->cap * 2 : 16;
    while (ncap < want)
        ncap *= 2;
    uint32_t *a = realloc(hp->a, (size_t)ncap * sizeof *a);
    if (!a)
        return -ENOMEM;
    hp->a = a;
    hp->cap = ncap;
    return 0;
}

/* Requires room (heap_reserve). O(log n). */
static void heap_push(cf_winop *op, heap *hp, uint32_t w)
{
    uint32_t i = hp->n++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (op->wins[hp->a[p]].start <= op->wins[w].start)
            break;
        hp->a[i] = hp->a[p];
        i = p;
    }
    hp->a[i] = w;
}

static uint32_t heap_pop(cf_winop *op, heap *hp)
{
    uint32_t top = hp->a[0];
    uint32_t last = hp->a[--hp->n];
    uint32_t i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= hp->n)
            break;
        if (c + 1 < hp->n && op->wins[hp->a[c + 1]].start < op->wins[hp->a[c]].start)
            c++;
        if (op->wins[last].start <= op->wins[hp->a[c]].start)
            break;
        hp->a[i] = hp->a[c];
        i = c;
    }
    if (hp->n)
        hp->a[i] = last;
    return top;
}

/* ---- pages ------------------------------------------------------------ */

static page *page_find(const cf_winop *op, uint64_t h, const char *s, size_t len)
{
    if (!op->pmap.slots)
        return NULL;
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & op->pmap.mask;; i = (i + 1) & op->pmap.mask) {
        const slot *sl = &op->pmap.slots[i];
        if (sl->idx == NIL)
            return NULL;
        if (sl->tag == tag) {
            page *p = op->pages[sl->idx];
            if (p->hash == h && p->len == len && memcmp(p->bytes, s, len) == 0)
                return p;
        }
    }
}

static page *page_intern(cf_winop *op, uint64_t h, const char *s, size_t len)
{
    if (map_reserve(op, &op->pmap, page_hash_of) < 0)
        return NULL;
    if (op->npage_free == 0) {
        uint32_t ncap = op->pages_cap ? op->pages_cap * 2 : 16;
        page **pp = realloc(op->pages, (size_t)ncap * sizeof *pp);
        if (!pp)
            return NULL;
        op->pages = pp;
        uint32_t *fs = realloc(op->page_free, (size_t)ncap * sizeof *fs);
        if (!fs)
            return NULL;
        op->page_free = fs;
        for (uint32_t i = ncap; i > op->pages_cap; i--) {
            op->pages[i - 1] = NULL;
            op->page_free[op->npage_free++] = i - 1;
        }
        op->pages_cap = ncap;
    }
    page *p = malloc(sizeof *p + len + 1);
    if (!p)
        return NULL;
    p->hash = h;
    p->refs = 0;
    p->len = (uint32_t)len;
    memcpy(p->bytes, s, len);
    p->bytes[len] = '\0';
    p->idx = op->page_free[--op->npage_free];
    op->pages[p->idx] = p;
    map_place(&op->pmap, h, p->idx);
    op->pmap.used++;
    op->page_bytes += sizeof *p + len + 1;
    return p;
}

/* Frees a page no entry points at any more. */
static void page_release(cf_winop *op, page *p)
{
    map_remove(op, &op->pmap, p->hash, p->idx, page_hash_of);
    op->pages[p->idx] = NULL;
    op->page_free[op->npage_free++] = p->idx;
    op->page_bytes -= sizeof *p + p->len + 1;
    free(p);
}

/* ---- windows ---------------------------------------------------------- */

static window *window_find(const cf_winop *op, int64_t start, uint32_t *ret_idx)
{
    if (!op->wmap.slots)
        return NULL;
    uint64_t h = window_hash(start);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & op->wmap.mask;; i = (i + 1) & op->wmap.mask) {
        const slot *sl = &op->wmap.slots[i];
        if (sl->idx == NIL)
            return NULL;
        if (sl->tag == tag && op->wins[sl->idx].start == start) {
            *ret_idx = sl->idx;
            return &op->wins[sl->idx];
        }
    }
}

/* Creates the window at start, fired or not, and queues it on the matching
 * heap. The pointer is valid until the next window creation. */
static window *window_create(cf_winop *op, int64_t start, bool fired)
{
    if (map_reserve(op, &op->wmap, window_hash_of) < 0 ||
        heap_reserve(&op->open, op->wmap.used + 1) < 0 ||
        heap_reserve(&op->fired, op->wmap.used + 1) < 0)
        return NULL;
    if (op->win_free == NIL) {
        uint32_t ncap = op->wins_cap ? op->wins_cap * 2 : 16;
        window *w = realloc(op->wins, (size_t)ncap * sizeof *w);
        if (!w)
            return NULL;
        op->wins = w;
        for (uint32_t i = ncap; i > op->wins_cap; i--) {
            memset(&op->wins[i - 1], 0, sizeof(window));
            op->wins[i - 1].next_free = op->win_free;
            op->win_free = i - 1;
        }
        op->wins_cap = ncap;
    }
    uint32_t idx = op->win_free;
    window *w = &op->wins[idx];
    uint32_t next = w->next_free;
    memset(w, 0, sizeof *w);
    w->start = start;
    w->fired = fired;
    w->used = true;
    heap_push(op, fired ? &op->fired : &op->open, idx);
    op->win_free = next;
    map_place(&op->wmap, window_hash(start), idx);
    op->wmap.used++;
    return w;
}

/* ---- entries ---------------------------------------------------------- */

static entry *entry_find(const cf_winop *op, int64_t start, const page *pg)
{
    if (!op->emap.slots)
        return NULL;
    uint64_t h = entry_hash(start, pg);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & op->emap.mask;; i = (i + 1) & op->emap.mask) {
        const slot *sl = &op->emap.slots[i];
        if (sl->idx == NIL)
            return NULL;
        if (sl->tag == tag) {
            entry *e = entry_at(op, sl->idx);
            if (e->start == start && e->pg == pg)
                return e;
        }
    }
}

/* A new, empty entry for (w, pg), linked into the map and the window. */
static entry *entry_create(cf_winop *op, window *w, page *pg)
{
    if (map_reserve(op, &op->emap, entry_hash_of) < 0)
        return NULL;
    if (w->n == w->cap) {
        uint32_t ncap = w->cap ? w->cap * 2 : 4;
        entry **pe = realloc(w->ents, (size_t)ncap * sizeof *pe);
        if (!pe)
            return NULL;
        w->ents = pe;
        op->ents_bytes += (size_t)(ncap - w->cap) * sizeof *pe;
        w->cap = ncap;
    }
    if (op->entry_free == NIL) {
        if (op->nchunks == (NIL >> ENTRY_CHUNK_SHIFT))
            return NULL;
        entry **pc = realloc(op->chunks, (size_t)(op->nchunks + 1) * sizeof *pc);
        if (!pc)
            return NULL;
        op->chunks = pc;
        entry *c = calloc(ENTRY_CHUNK, sizeof *c);
        if (!c)
            return NULL;
        op->chunks[op->nchunks] = c;
        uint32_t base = op->nchunks << ENTRY_CHUNK_SHIFT;
        for (uint32_t i = ENTRY_CHUNK; i > 0; i--) {
            c[i - 1].idx = op->entry_free;
            op->entry_free = base + i - 1;
        }
        op->nchunks++;
    }
    uint32_t idx = op->entry_free;
    entry *e = entry_at(op, idx);
    op->entry_free = e->idx;
    memset(e, 0, sizeof *e);
    e->start = w->start;
    e->pg = pg;
    e->idx = idx;
    pg->refs++;
    map_place(&op->emap, entry_hash(w->start, pg), idx);
    op->emap.used++;
    w->ents[w->n++] = e;
    if (w->fired)
        op->kept_pairs++;
    else
        op->open_pairs++;
    return e;
}

static uint64_t entry_users(const entry *e)
{
    return e->nusers == USERS_IN_HLL ? cf_hll_count(e->users.s.hll) : e->nusers;
}

/* Adds one user hash: inline while at most INLINE_USERS distinct, then a
 * cf_hll. Returns 0 or -ENOMEM (state unchanged). */
static int entry_add_user(cf_winop *op, entry *e, uint64_t user)
{
    if (e->nusers == USERS_IN_HLL) {
        int rc = cf_hll_add(e->users.s.hll, user);
        if (rc < 0)
            return rc;
        /* Storage can only have grown if the sketch changed. */
        if (rc > 0) {
            size_t m = cf_hll_memory(e->users.s.hll);
            op->hll_bytes += m - e->users.s.mem;
            e->users.s.mem = m;
        }
        return 0;
    }
    for (uint8_t i = 0; i < e->nusers; i++)
        if (e->users.inl[i] == user)
            return 0;
    if (e->nusers < INLINE_USERS) {
        e->users.inl[e->nusers++] = user;
        return 0;
    }
    cf_hll *h = cf_hll_new();
    if (!h)
        return -ENOMEM;
    for (uint8_t i = 0; i < e->nusers; i++)
        if (cf_hll_add(h, e->users.inl[i]) < 0)
            goto oom;
    if (cf_hll_add(h, user) < 0)
        goto oom;
    e->users.s.hll = h;
    e->users.s.mem = cf_hll_memory(h);
    e->nusers = USERS_IN_HLL;
    op->hll_bytes += e->users.s.mem;
    return 0;
oom:
    cf_hll_free(h);
    return -ENOMEM;
}

static void entry_destroy(cf_winop *op, entry *e)
{
    map_remove(op, &op->emap, entry_hash(e->start, e->pg), e->idx, entry_hash_of);
    if (e->nusers == USERS_IN_HLL) {
        op->hll_bytes -= e->users.s.mem;
        cf_hll_free(e->users.s.hll);
    }
    if (--e->pg->refs == 0)
        page_release(op, e->pg);
    uint32_t idx = e->idx;
    memset(e, 0, sizeof *e);
    e->idx = op->entry_free;
    op->entry_free = idx;
}

static void window_purge(cf_winop *op, uint32_t widx)
{
    window *w = &op->wins[widx];
    for (uint32_t i = 0; i < w->n; i++)
        entry_destroy(op, w->ents[i]);
    if (w->fired)
        op->kept_pairs -= w->n;
    else
        op->open_pairs -= w->n;
    op->ents_bytes -= (size_t)w->cap * sizeof *w->ents;
    free(w->ents);
    map_remove(op, &op->wmap, window_hash(w->start), widx, window_hash_of);
    memset(w, 0, sizeof *w);
    w->next_free = op->win_free;
    op->win_free = widx;
}

/* ---- emission --------------------------------------------------------- */

static void emit_entry(const cf_winop *op, const entry *e, bool final, cf_window_emit_fn emit,
                       void *ctx)
{
    if (!emit)
        return;
    cf_window_result r = {
        .type = op->cfg.type,
        .start = e->start,
        .end = e->start + op->cfg.size_ms,
        .page_url = e->pg->bytes,
        .page_url_len = e->pg->len,
        .count = e->count,
        .unique_users = entry_users(e),
        .revision = e->revision,
        .final = final,
    };
    emit(ctx, &r);
}

/* Bytewise page order; a prefix sorts first. */
static int cmp_entry_page(const void *a, const void *b)
{
    const page *x = (*(const entry *const *)a)->pg, *y = (*(const entry *const *)b)->pg;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->bytes, y->bytes, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

static int cmp_window_start(const void *a, const void *b)
{
    int64_t x = (*(const window *const *)a)->start, y = (*(const window *const *)b)->start;
    return (x > y) - (x < y);
}

/* ---- public API --------------------------------------------------------- */

static int normalize_config(const cf_winop_config *in, cf_winop_config *ret)
{
    cf_winop_config c = *in;
    if (c.allowed_lateness_ms < 0 || c.size_ms <= 0)
        return -EINVAL;
    if (c.type == CF_WINDOW_TUMBLING) {
        /* 0 is accepted as "same as size" for convenience. */
        if (c.slide_ms != 0 && c.slide_ms != c.size_ms)
            return -EINVAL;
        c.slide_ms = c.size_ms;
    } else if (c.type == CF_WINDOW_SLIDING) {
        if (cf_sliding_validate(c.size_ms, c.slide_ms) < 0)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    *ret = c;
    return 0;
}

cf_winop *cf_winop_new(const cf_winop_config *cfg)
{
    cf_winop_config c;
    if (!cfg || normalize_config(cfg, &c) < 0)
        return NULL;
    cf_winop *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->cfg = c;
    op->wm = CF_TIME_NONE;
    op->per_event = (uint32_t)(c.size_ms / c.slide_ms);
    op->entry_free = NIL;
    op->win_free = NIL;
    op->scratch = malloc(op->per_event * sizeof *op->scratch);
    if (!op->scratch) {
        free(op);
        return NULL;
    }
    return op;
}

void cf_winop_free(cf_winop *op)
{
    if (!op)
        return;
    for (uint32_t c = 0; c < op->nchunks; c++) {
        for (uint32_t i = 0; i < ENTRY_CHUNK; i++) {
            entry *e = &op->chunks[c][i];
            if (e->pg && e->nusers == USERS_IN_HLL)
                cf_hll_free(e->users.s.hll);
        }
        free(op->chunks[c]);
    }
    free(op->chunks);
    for (uint32_t i = 0; i < op->pages_cap; i++)
        free(op->pages[i]);
    free(op->pages);
    free(op->page_free);
    for (uint32_t i = 0; i < op->wins_cap; i++)
        free(op->wins[i].ents);
    free(op->wins);
    free(op->emap.slots);
    free(op->pmap.slots);
    free(op->wmap.slots);
    free(op->open.a);
    free(op->fired.a);
    free(op->scratch);
    free(op);
}

/* Hot path. Per window of the event: one map probe; a new (window, page)
 * pair interns the page (once per page) and may allocate; an existing pair
 * allocates nothing unless its user set grows. Re-fired results are emitted
 * in ascending window order; emit must not call back into the operator. A
 * timestamp whose windows do not fit in int64 ms is in no window and
 * returns 0; a page longer than MAX_PAGE_LEN gives -EINVAL. On -ENOMEM the
 * event may have been added to some of its windows already. */
int cf_winop_add(cf_winop *op, const char *page_url, size_t len, uint64_t user_hash, int64_t ts,
                 cf_window_emit_fn emit, void *ctx)
{
    if (len > MAX_PAGE_LEN)
        return -EINVAL;
    int n;
    if (op->cfg.type == CF_WINDOW_TUMBLING)
        n = cf_assign_tumbling(op->cfg.size_ms, ts, op->scratch) < 0 ? 0 : 1;
    else
        n = cf_assign_sliding(op->cfg.size_ms, op->cfg.slide_ms, ts, op->scratch,
                              op->per_event);
    if (n <= 0)
        return 0;
    uint64_t ph = cf_hash64(page_url, len, PAGE_SEED);
    page *pg = page_find(op, ph, page_url, len);
    int added = 0;
    for (int k = 0; k < n; k++) {
        const cf_interval *iv = &op->scratch[k];
        if (purge_due(op, iv->end))
            continue;
        bool fired = fire_due(op, iv->end);
        entry *e = pg ? entry_find(op, iv->start, pg) : NULL;
        /* A pair already in a fired window fires again with revision + 1; a
         * pair new to it fires for the first time (revision 0). */
        bool refire = e && fired;
        if (!e) {
            if (!pg && !(pg = page_intern(op, ph, page_url, len)))
                return -ENOMEM;
            uint32_t widx;
            window *w = window_find(op, iv->start, &widx);
            if (!w && !(w = window_create(op, iv->start, fired)))
                goto oom;
            if (!(e = entry_create(op, w, pg)))
                goto oom;
        }
        /* Cannot fail for a new pair (its first user is stored inline). */
        if (entry_add_user(op, e, user_hash) < 0)
            goto oom;
        e->count++;
        if (refire)
            e->revision++;
        added++;
        if (fired)
            emit_entry(op, e, true, emit, ctx);
    }
    return added;
oom:
    /* A page interned for this event but not referenced is let go. */
    if (pg && pg->refs == 0)
        page_release(op, pg);
    return -ENOMEM;
}

/* Fires every due window in start (= end) order, each window's pages in
 * bytewise order, then purges windows past their lateness. O(log W) per
 * window fired or purged plus a sort of each fired window's pages; O(1) when
 * nothing is due. */
void cf_winop_advance(cf_winop *op, int64_t wm, cf_window_emit_fn emit, void *ctx)
{
    if (wm <= op->wm)
        return;
    op->wm = wm;
    while (op->open.n && fire_due(op, op->wins[op->open.a[0]].start + op->cfg.size_ms)) {
        uint32_t widx = heap_pop(op, &op->open);
        window *w = &op->wins[widx];
        qsort(w->ents, w->n, sizeof *w->ents, cmp_entry_page);
        for (uint32_t i = 0; i < w->n; i++)
            emit_entry(op, w->ents[i], true, emit, ctx);
        w->fired = true;
        op->open_pairs -= w->n;
        op->kept_pairs += w->n;
        heap_push(op, &op->fired, widx);
    }
    while (op->fired.n && purge_due(op, op->wins[op->fired.a[0]].start + op->cfg.size_ms))
        window_purge(op, heap_pop(op, &op->fired));
}

void cf_winop_foreach_open(const cf_winop *op, cf_window_emit_fn emit, void *ctx)
{
    if (!emit || op->open.n == 0)
        return;
    /* Sorted copies, so that the operator itself is not touched. If they
     * cannot be allocated, results come in heap order instead. */
    const window **ws = malloc((size_t)op->open.n * sizeof *ws);
    uint32_t maxn = 0;
    for (uint32_t i = 0; i < op->open.n; i++) {
        const window *w = &op->wins[op->open.a[i]];
        if (ws)
            ws[i] = w;
        if (w->n > maxn)
            maxn = w->n;
    }
    if (ws)
        qsort(ws, op->open.n, sizeof *ws, cmp_window_start);
    entry **es = malloc((size_t)maxn * sizeof *es);
    for (uint32_t i = 0; i < op->open.n; i++) {
        const window *w = ws ? ws[i] : &op->wins[op->open.a[i]];
        if (es) {
            memcpy(es, w->ents, w->n * sizeof *es);
            qsort(es, w->n, sizeof *es, cmp_entry_page);
        }
        for (uint32_t j = 0; j < w->n; j++)
            emit_entry(op, es ? es[j] : w->ents[j], false, emit, ctx);
    }
    free(es);
    free(ws);
}

size_t cf_winop_open_count(const cf_winop *op)
{
    return op->open_pairs;
}

size_t cf_winop_kept_count(const cf_winop *op)
{
    return op->kept_pairs;
}

size_t cf_winop_memory(const cf_winop *op)
{
    size_t m = sizeof *op + op->per_event * sizeof *op->scratch;
    m += (size_t)op->nchunks * (ENTRY_CHUNK * sizeof(entry) + sizeof(entry *));
    m += (size_t)op->pages_cap * (sizeof(page *) + sizeof(uint32_t)) + op->page_bytes;
    m += (size_t)op->wins_cap * sizeof(window) + op->ents_bytes;
    if (op->emap.slots)
        m += ((size_t)op->emap.mask + 1) * sizeof(slot);
    if (op->pmap.slots)
        m += ((size_t)op->pmap.mask + 1) * sizeof(slot);
    if (op->wmap.slots)
        m += ((size_t)op->wmap.mask + 1) * sizeof(slot);
    m += ((size_t)op->open.cap + op->fired.cap) * sizeof(uint32_t);
    return m + op->hll_bytes;
}

/* ---- snapshot ------------------------------------------------------------
 * u32 magic, u8 type, i64 size, slide, lateness, i64 watermark, u32 windows;
 * per window ascending by start: i64 start, u32 entries; per entry in page
 * order: str page, u64 count, u32 revision, u8 nusers, then nusers x u64
 * (inline) or a cf_hll encoding (nusers = 255). Canonical: equal states
 * give equal bytes, up to the order of inline user hashes. */

int cf_winop_save(const cf_winop *op, cf_buf *out)
{
    cf_buf_put_u32(out, SAVE_MAGIC);
    cf_buf_put_u8(out, (uint8_t)op->cfg.type);
    cf_buf_put_i64(out, op->cfg.size_ms);
    cf_buf_put_i64(out, op->cfg.slide_ms);
    cf_buf_put_i64(out, op->cfg.allowed_lateness_ms);
    cf_buf_put_i64(out, op->wm);
    /* A window left empty by an allocation failure in add() holds nothing
     * worth saving, and load() rejects empty windows. */
    uint32_t nw = 0, maxn = 0;
    for (uint32_t i = 0; i < op->wins_cap; i++)
        if (op->wins[i].used && op->wins[i].n > 0) {
            nw++;
            if (op->wins[i].n > maxn)
                maxn = op->wins[i].n;
        }
    cf_buf_put_u32(out, nw);
    if (nw == 0)
        return out->oom ? -ENOMEM : 0;
    const window **ws = malloc((size_t)nw * sizeof *ws);
    if (!ws)
        return -ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < op->wins_cap; i++)
        if (op->wins[i].used && op->wins[i].n > 0)
            ws[k++] = &op->wins[i];
    qsort(ws, nw, sizeof *ws, cmp_window_start);
    entry **es = malloc((size_t)maxn * sizeof *es);
    if (!es) {
        free(ws);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < nw; i++) {
        const window *w = ws[i];
        cf_buf_put_i64(out, w->start);
        cf_buf_put_u32(out, w->n);
        memcpy(es, w->ents, w->n * sizeof *es);
        qsort(es, w->n, sizeof *es, cmp_entry_page);
        for (uint32_t j = 0; j < w->n; j++) {
            const entry *e = es[j];
            cf_buf_put_str(out, e->pg->bytes, e->pg->len);
            cf_buf_put_u64(out, e->count);
            cf_buf_put_u32(out, e->revision);
            cf_buf_put_u8(out, e->nusers);
            if (e->nusers == USERS_IN_HLL)
                cf_hll_save(e->users.s.hll, out);
            else
                for (uint8_t u = 0; u < e->nusers; u++)
                    cf_buf_put_u64(out, e->users.inl[u]);
        }
    }
    free(es);
    free(ws);
    return out->oom ? -ENOMEM : 0;
}

/* Reads one entry into window w. Rejects a page seen twice in the window,
 * an empty entry, duplicate inline users or a revision on an unfired
 * window. */
static int load_entry(cf_winop *op, window *w, cf_reader *in)
{
    const char *s;
    size_t len;
    uint64_t count;
    uint32_t rev;
    uint8_t nu;
    if (!cf_get_str(in, &s, &len) || !cf_get_u64(in, &count) || !cf_get_u32(in, &rev) ||
        !cf_get_u8(in, &nu) || len > MAX_PAGE_LEN || count == 0 || (!w->fired && rev != 0) ||
        (nu > INLINE_USERS && nu != USERS_IN_HLL))
        return -EINVAL;
    uint64_t ph = cf_hash64(s, len, PAGE_SEED);
    page *pg = page_find(op, ph, s, len);
    if (pg && entry_find(op, w->start, pg))
        return -EINVAL;
    if (!pg && !(pg = page_intern(op, ph, s, len)))
        return -ENOMEM;
    entry *e = entry_create(op, w, pg);
    if (!e) {
        if (pg->refs == 0)
            page_release(op, pg);
        return -ENOMEM;
    }
    e->count = count;
    e->revision = rev;
    if (nu == USERS_IN_HLL) {
        cf_hll *h = cf_hll_load(in);
        if (!h)
            return -EINVAL;
        e->users.s.hll = h;
        e->users.s.mem = cf_hll_memory(h);
        e->nusers = USERS_IN_HLL;
        op->hll_bytes += e->users.s.mem;
        return 0;
    }
    for (uint8_t u = 0; u < nu; u++) {
        uint64_t v;
        if (!cf_get_u64(in, &v))
            return -EINVAL;
        for (uint8_t x = 0; x < e->nusers; x++)
            if (e->users.inl[x] == v)
                return -EINVAL;
        e->users.inl[e->nusers++] = v;
    }
    return 0;
}

cf_winop *cf_winop_load(const cf_winop_config *cfg, cf_reader *in)
{
    cf_winop *op = cf_winop_new(cfg);
    if (!op)
        return NULL;
    uint32_t magic, nw;
    uint8_t type;
    int64_t size, slide, late, wm;
    if (!cf_get_u32(in, &magic) || !cf_get_u8(in, &type) || !cf_get_i64(in, &size) ||
        !cf_get_i64(in, &slide) || !cf_get_i64(in, &late) || !cf_get_i64(in, &wm) ||
        !cf_get_u32(in, &nw))
        goto fail;
    if (magic != SAVE_MAGIC || type != (uint8_t)op->cfg.type || size != op->cfg.size_ms ||
        slide != op->cfg.slide_ms || late != op->cfg.allowed_lateness_ms)
        goto fail;
    op->wm = wm;
    bool have_prev = false;
    int64_t prev = 0;
    for (uint32_t i = 0; i < nw; i++) {
        int64_t start, end;
        uint32_t ne;
        if (!cf_get_i64(in, &start) || !cf_get_u32(in, &ne) || ne == 0)
            goto fail;
        /* Windows come strictly ascending, aligned to the slide, fitting in
         * int64, and not yet due for purging (a saved operator holds none). */
        if ((have_prev && start <= prev) || start % op->cfg.slide_ms != 0 ||
            __builtin_add_overflow(start, op->cfg.size_ms, &end) || purge_due(op, end))
            goto fail;
        have_prev = true;
        prev = start;
        window *w = window_create(op, start, fire_due(op, end));
        if (!w)
            goto fail;
        /* w stays valid: no window is created while its entries load. */
        for (uint32_t j = 0; j < ne; j++)
            if (load_entry(op, w, in) < 0)
                goto fail;
    }
    return op;
fail:
    cf_winop_free(op);
    return NULL;
}
