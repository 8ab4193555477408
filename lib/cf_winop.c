#include "cf_winop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_hll.h"
#include "cf_keycap.h"
#include "cf_time.h"

/* At most this many sliding windows per event (size / slide). */
#define WINOP_MAX_WINDOWS 1024

/* 0 when (size, slide) is a valid sliding configuration: size > 0,
 * slide > 0, size % slide == 0, size / slide <= WINOP_MAX_WINDOWS. */
static int sliding_validate(int64_t size, int64_t slide)
{
    if (size <= 0 || slide <= 0 || size % slide != 0 || size / slide > WINOP_MAX_WINDOWS)
        return -EINVAL;
    return 0;
}

/* Layout: panes (window slicing, as in Flink's pane optimization or Scotty).
 *
 * A window [g, g + size) is the union of k = size / slide panes
 * [q, q + slide), q = g, g + slide, ..., g + size - slide. State is kept per
 * (pane, page) only: an event updates exactly one count and one user sketch,
 * whatever k is, and a window's result is merged from its k panes when it is
 * emitted (firing, re-firing, interim results). Tumbling windows are k = 1.
 *
 * - Pages are interned: one heap block per distinct page_url, refcounted by
 *   the cells that point at it.
 * - A cell is keyed by (grid position g, page) and serves two roles at
 *   once: the page's data in pane g (count > 0: count and users), and the
 *   revision record of window g for the page (rec). Cells live in fixed
 *   chunks that never move and are found through one open-addressing map.
 * - A grid slot g exists while pane g holds cells or window g holds
 *   (window, page) pairs; the slots sit in one array sorted by g, each with
 *   an intrusive list of its cells and the number of pairs of window g.
 *   Pane g is needed by windows g - size + slide .. g, so slot g (pane and
 *   window alike) is freed when window g is purged; purging goes in order
 *   of g.
 * - Firing needs no per-pair record: a window fires exactly when the
 *   watermark passes end - 1, so "fired" is a function of the watermark.
 *   A pair that fired in advance() has revision 0 and no record; a cell
 *   remembers how many of its pane's windows had already fired when it got
 *   its first event (born), which tells whether the page was in a window
 *   when that window fired. Only late events create records (revision > 0,
 *   or a page new to a fired window).
 * - The pair counts (open/kept) are kept per window: a new (pane, page)
 *   cell looks at the neighbouring panes to see which open windows it adds
 *   a page to; late events count the pages they add to fired windows. */

#define NIL UINT32_MAX
#define CELL_CHUNK_SHIFT 8
#define CELL_CHUNK (1u << CELL_CHUNK_SHIFT)
#define INLINE_USERS 2
#define USERS_IN_HLL 0xff
#define PAGE_SEED 0x636c69636b666c6fULL
#define SAVE_MAGIC 0x33574643u /* "CFW3": CFW2 + the refused count */
#define SAVE_MAGIC_V2 0x32574643u /* "CFW2", still loaded (refused = 0) */
/* Bounds on what a snapshot may claim, so a corrupt one cannot make load()
 * allocate without limit before the input runs out. */
#define MAX_PAGE_LEN (1u << 20)
/* Pages ahead whose sketches are prefetched when emitting results. */
#define PREFETCH_AHEAD 3

typedef struct page {
    uint64_t hash;
    uint32_t refs;      /* cells pointing here */
    uint32_t len;
    uint32_t idx;       /* position in op->pages */
    uint32_t mark;      /* gather(): stamp of the last gather that saw it */
    uint32_t ghead;     /* gather(): first of its cells in op->gcell */
    char bytes[];       /* len bytes + NUL */
} page;

typedef struct cell {
    int64_t start;      /* grid position: pane start and window start */
    page *pg;           /* NULL while the cell is free */
    uint64_t count;     /* events of pg in the pane; 0: no pane data */
    union {
        uint64_t inl[INLINE_USERS];
        struct {
            cf_hll *hll;
            size_t mem; /* cf_hll_memory(hll) as last accounted */
        } s;
    } users;
    uint32_t revision;  /* window start's last revision for pg, with rec */
    uint32_t idx;       /* own index */
    uint32_t next;      /* next cell of the same slot, or of the free list */
    uint16_t born;      /* windows of the pane already fired at its first event */
    uint8_t nusers;     /* 0..INLINE_USERS inline, or USERS_IN_HLL */
    uint8_t rec;        /* revision is a record for (window start, pg) */
} cell;

typedef struct slot {
    int64_t start;
    uint32_t head;      /* first cell, NIL if none */
    uint32_t ncells;
    uint32_t npairs;    /* (window start, page) pairs: pages with data in its panes */
} slot;

/* Open addressing with linear probing; tag = high half of the hash. */
typedef struct mslot {
    uint32_t idx;
    uint32_t tag;
} mslot;

typedef struct omap {
    mslot *slots;
    uint32_t mask;      /* capacity - 1; capacity 0 while slots == NULL */
    uint32_t used;
} omap;

struct cf_winop {
    cf_winop_config cfg;
    uint64_t page_seed; /* of the page hash (cf_winop_set_hash_seed) */
    int64_t wm;
    uint32_t k;         /* panes per window (size / slide) */

    cell **chunks;
    uint32_t nchunks;
    uint32_t cell_free; /* free list through cell.next */
    uint32_t nfree;
    omap cmap;

    page **pages;
    uint32_t pages_cap;
    uint32_t *page_free;
    uint32_t npage_free;
    omap pmap;

    slot *slots;        /* ascending by start */
    uint32_t nslots, slots_cap;

    size_t open_pairs, kept_pairs;
    size_t page_bytes, hll_bytes;
    cf_keycap cap;      /* bound on distinct pages (pmap.used), policy refuse */

    /* Scratch for merging panes (the operator's own storage, so that
     * emission does not allocate once warm). */
    cf_hll *merge;
    uint32_t stamp;
    const cell **gcell;
    uint32_t *gnext;
    uint32_t gcap;
    page **gpages;
    uint32_t gpcap;
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

static inline cell *cell_at(const cf_winop *op, uint32_t idx)
{
    return &op->chunks[idx >> CELL_CHUNK_SHIFT][idx & (CELL_CHUNK - 1)];
}

static inline uint64_t cell_hash(int64_t start, uint64_t page_hash)
{
    return mix64(page_hash ^ ((uint64_t)start * 0x9e3779b97f4a7c15ULL));
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

/* Pane of ts and the first window holding it. False when some window of ts
 * does not fit in int64 ms: such an event is in no window (as
 * the window range would overflow: -ERANGE). Then every window and pane from first to
 * pane + size fits. */
static inline bool pane_of(const cf_winop *op, int64_t ts, int64_t *ret_pane, int64_t *ret_first)
{
    int64_t s = op->cfg.slide_ms, size = op->cfg.size_ms, p, first, end;
    if (__builtin_mul_overflow(cf_floor_div(ts, s), s, &p) ||
        __builtin_sub_overflow(p, size - s, &first) || __builtin_add_overflow(p, size, &end))
        return false;
    *ret_pane = p;
    *ret_first = first;
    return true;
}

/* ---- open-addressing map ---------------------------------------------- */

typedef uint64_t (*hash_of_fn)(const cf_winop *op, uint32_t idx);

static uint64_t cell_hash_of(const cf_winop *op, uint32_t idx)
{
    const cell *c = cell_at(op, idx);
    return cell_hash(c->start, c->pg->hash);
}

static uint64_t page_hash_of(const cf_winop *op, uint32_t idx)
{
    return op->pages[idx]->hash;
}

static void map_place(omap *m, uint64_t h, uint32_t idx)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->slots[i].idx != NIL)
        i = (i + 1) & m->mask;
    m->slots[i].idx = idx;
    m->slots[i].tag = (uint32_t)(h >> 32);
}

/* Makes room for n more keys (load factor <= 3/4). O(size) when it grows. */
static int map_reserve(const cf_winop *op, omap *m, uint32_t n, hash_of_fn hash_of)
{
    uint64_t cap = m->slots ? (uint64_t)m->mask + 1 : 0;
    uint64_t want = (uint64_t)m->used + n;
    if (want * 4 <= cap * 3)
        return 0;
    uint64_t ncap = cap ? cap : 16;
    while (want * 4 > ncap * 3)
        ncap *= 2;
    if (ncap > (1u << 31))
        return -ENOMEM;
    mslot *s = malloc((size_t)ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    for (uint64_t i = 0; i < ncap; i++)
        s[i].idx = NIL;
    omap nm = {s, (uint32_t)(ncap - 1), m->used};
    for (uint64_t i = 0; i < cap; i++)
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

/* ---- pages ------------------------------------------------------------ */

static page *page_find(const cf_winop *op, uint64_t h, const char *s, size_t len)
{
    if (!op->pmap.slots)
        return NULL;
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & op->pmap.mask;; i = (i + 1) & op->pmap.mask) {
        const mslot *sl = &op->pmap.slots[i];
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
    if (map_reserve(op, &op->pmap, 1, page_hash_of) < 0)
        return NULL;
    if (op->npage_free == 0) {
        if (op->pages_cap >= (1u << 30))
            return NULL;
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
    p->mark = 0;
    p->ghead = NIL;
    memcpy(p->bytes, s, len);
    p->bytes[len] = '\0';
    p->idx = op->page_free[--op->npage_free];
    op->pages[p->idx] = p;
    map_place(&op->pmap, h, p->idx);
    op->pmap.used++;
    op->page_bytes += sizeof *p + len + 1;
    return p;
}

/* Frees a page no cell points at any more. */
static void page_release(cf_winop *op, page *p)
{
    map_remove(op, &op->pmap, p->hash, p->idx, page_hash_of);
    op->pages[p->idx] = NULL;
    op->page_free[op->npage_free++] = p->idx;
    op->page_bytes -= sizeof *p + p->len + 1;
    free(p);
}

/* ---- slots ------------------------------------------------------------- */

/* Index of the first slot with start >= g. O(log slots). */
static uint32_t slot_lower(const cf_winop *op, int64_t g)
{
    uint32_t lo = 0, hi = op->nslots;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (op->slots[mid].start < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static slot *slot_find(const cf_winop *op, int64_t g)
{
    uint32_t i = slot_lower(op, g);
    return i < op->nslots && op->slots[i].start == g ? &op->slots[i] : NULL;
}

static int slots_reserve(cf_winop *op, uint32_t n)
{
    if ((uint64_t)op->nslots + n <= op->slots_cap)
        return 0;
    uint64_t ncap = op->slots_cap ? op->slots_cap : 8;
    while (ncap < (uint64_t)op->nslots + n)
        ncap *= 2;
    if (ncap > (1u << 30))
        return -ENOMEM;
    slot *s = realloc(op->slots, (size_t)ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    op->slots = s;
    op->slots_cap = (uint32_t)ncap;
    return 0;
}

/* Slot g, created empty if missing; needs room (slots_reserve). Slot
 * pointers are valid until the next creation. O(slots) when it inserts. */
static slot *slot_get(cf_winop *op, int64_t g)
{
    uint32_t i = slot_lower(op, g);
    if (i < op->nslots && op->slots[i].start == g)
        return &op->slots[i];
    memmove(&op->slots[i + 1], &op->slots[i], (size_t)(op->nslots - i) * sizeof *op->slots);
    op->nslots++;
    op->slots[i] = (slot){.start = g, .head = NIL};
    return &op->slots[i];
}

/* ---- cells ------------------------------------------------------------ */

/* Hot path: the cell (g, page bytes), without a separate page lookup. */
static inline cell *cell_lookup(const cf_winop *op, int64_t g, uint64_t ph, const char *s,
                                size_t len)
{
    if (!op->cmap.slots)
        return NULL;
    uint64_t h = cell_hash(g, ph);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & op->cmap.mask;; i = (i + 1) & op->cmap.mask) {
        const mslot *sl = &op->cmap.slots[i];
        if (sl->idx == NIL)
            return NULL;
        if (sl->tag == tag) {
            cell *c = cell_at(op, sl->idx);
            if (c->start == g && c->pg->hash == ph && c->pg->len == len &&
                memcmp(c->pg->bytes, s, len) == 0)
                return c;
        }
    }
}

static cell *cell_find(const cf_winop *op, int64_t g, const page *pg)
{
    if (!op->cmap.slots)
        return NULL;
    uint64_t h = cell_hash(g, pg->hash);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & op->cmap.mask;; i = (i + 1) & op->cmap.mask) {
        const mslot *sl = &op->cmap.slots[i];
        if (sl->idx == NIL)
            return NULL;
        if (sl->tag == tag) {
            cell *c = cell_at(op, sl->idx);
            if (c->start == g && c->pg == pg)
                return c;
        }
    }
}

/* The pane data of (g, pg), or NULL. */
static inline const cell *data_find(const cf_winop *op, int64_t g, const page *pg)
{
    const cell *c = cell_find(op, g, pg);
    return c && c->count ? c : NULL;
}

/* Makes sure n cells can be created without allocating. */
static int cells_reserve(cf_winop *op, uint32_t n)
{
    if (map_reserve(op, &op->cmap, n, cell_hash_of) < 0)
        return -ENOMEM;
    while (op->nfree < n) {
        if (op->nchunks == (NIL >> CELL_CHUNK_SHIFT))
            return -ENOMEM;
        cell **pc = realloc(op->chunks, (size_t)(op->nchunks + 1) * sizeof *pc);
        if (!pc)
            return -ENOMEM;
        op->chunks = pc;
        cell *c = calloc(CELL_CHUNK, sizeof *c);
        if (!c)
            return -ENOMEM;
        op->chunks[op->nchunks] = c;
        uint32_t base = op->nchunks << CELL_CHUNK_SHIFT;
        for (uint32_t i = CELL_CHUNK; i > 0; i--) {
            c[i - 1].next = op->cell_free;
            op->cell_free = base + i - 1;
        }
        op->nchunks++;
        op->nfree += CELL_CHUNK;
    }
    return 0;
}

/* A new empty cell (g, pg) in slot sl. Needs room (cells_reserve). */
static cell *cell_new(cf_winop *op, slot *sl, page *pg)
{
    uint32_t idx = op->cell_free;
    cell *c = cell_at(op, idx);
    op->cell_free = c->next;
    op->nfree--;
    memset(c, 0, sizeof *c);
    c->start = sl->start;
    c->pg = pg;
    c->idx = idx;
    c->next = sl->head;
    sl->head = idx;
    sl->ncells++;
    pg->refs++;
    map_place(&op->cmap, cell_hash(sl->start, pg->hash), idx);
    op->cmap.used++;
    return c;
}

/* Unlinks a cell from the map and frees it; the caller fixes the slot. */
static void cell_destroy(cf_winop *op, cell *c)
{
    map_remove(op, &op->cmap, cell_hash(c->start, c->pg->hash), c->idx, cell_hash_of);
    if (c->nusers == USERS_IN_HLL) {
        op->hll_bytes -= c->users.s.mem;
        cf_hll_free(c->users.s.hll);
    }
    if (--c->pg->refs == 0)
        page_release(op, c->pg);
    uint32_t idx = c->idx;
    memset(c, 0, sizeof *c);
    c->next = op->cell_free;
    op->cell_free = idx;
    op->nfree++;
}

static uint64_t cell_users(const cell *c)
{
    return c->nusers == USERS_IN_HLL ? cf_hll_count(c->users.s.hll) : c->nusers;
}

/* Adds one user hash: inline while at most INLINE_USERS distinct, then a
 * cf_hll. Returns 0 or -ENOMEM (state unchanged). */
static int cell_add_user(cf_winop *op, cell *c, uint64_t user)
{
    if (c->nusers == USERS_IN_HLL) {
        int rc = cf_hll_add(c->users.s.hll, user);
        if (rc < 0)
            return rc;
        /* Storage can only have grown if the sketch changed. */
        if (rc > 0) {
            size_t m = cf_hll_memory(c->users.s.hll);
            op->hll_bytes += m - c->users.s.mem;
            c->users.s.mem = m;
        }
        return 0;
    }
    for (uint8_t i = 0; i < c->nusers; i++)
        if (c->users.inl[i] == user)
            return 0;
    if (c->nusers < INLINE_USERS) {
        c->users.inl[c->nusers++] = user;
        return 0;
    }
    cf_hll *h = cf_hll_new();
    if (!h)
        return -ENOMEM;
    for (uint8_t i = 0; i < c->nusers; i++)
        if (cf_hll_add(h, c->users.inl[i]) < 0)
            goto oom;
    if (cf_hll_add(h, user) < 0)
        goto oom;
    c->users.s.hll = h;
    c->users.s.mem = cf_hll_memory(h);
    c->nusers = USERS_IN_HLL;
    op->hll_bytes += c->users.s.mem;
    return 0;
oom:
    cf_hll_free(h);
    return -ENOMEM;
}

/* ---- merging panes ------------------------------------------------------ */

/* Sums the pane data of one page over a window: feed every data cell to
 * merge_cell, then read merge_done. One cell is read directly; more are
 * merged into op->merge, which was primed at creation to its largest
 * storage, so merging allocates nothing and cannot fail. */
typedef struct merger {
    const cell *one;
    uint64_t count;
    uint32_t n;
} merger;

static void merge_into_scratch(cf_hll *m, const cell *c)
{
    /* Cannot fail: see merger. */
    if (c->nusers == USERS_IN_HLL)
        (void)cf_hll_merge(m, c->users.s.hll);
    else
        for (uint8_t i = 0; i < c->nusers; i++)
            (void)cf_hll_add(m, c->users.inl[i]);
}

static void merge_cell(const cf_winop *op, merger *mg, const cell *c)
{
    mg->count += c->count;
    if (mg->n == 0) {
        mg->one = c;
    } else {
        if (mg->n == 1) {
            cf_hll_clear(op->merge);
            merge_into_scratch(op->merge, mg->one);
        }
        merge_into_scratch(op->merge, c);
    }
    mg->n++;
}

static uint64_t merge_users(const cf_winop *op, const merger *mg)
{
    if (mg->n == 0)
        return 0;
    return mg->n == 1 ? cell_users(mg->one) : cf_hll_count(op->merge);
}

static void emit_result(const cf_winop *op, int64_t g, const page *pg, uint64_t count,
                        uint64_t users, uint32_t rev, bool final, const merger *mg,
                        cf_window_emit_fn emit, void *ctx)
{
    if (!emit)
        return;
    /* The sketch behind `users`, for consumers that store or merge it
     * (history rollups): the one cell's own users, or the merge scratch. */
    const cf_hll *hll = NULL;
    const uint64_t *inl = NULL;
    uint32_t n_inl = 0;
    if (mg && mg->n == 1) {
        if (mg->one->nusers == USERS_IN_HLL) {
            hll = mg->one->users.s.hll;
        } else {
            inl = mg->one->users.inl;
            n_inl = mg->one->nusers;
        }
    } else if (mg && mg->n > 1) {
        hll = op->merge;
    }
    cf_window_result r = {
        .users_hll = hll,
        .users_inline = inl,
        .n_users_inline = n_inl,
        .type = op->cfg.type,
        .start = g,
        .end = g + op->cfg.size_ms,
        .page_url = pg->bytes,
        .page_url_len = pg->len,
        .count = count,
        .unique_users = users,
        .revision = rev,
        .final = final,
    };
    emit(ctx, &r);
}

/* Merges window g for one page by k lookups. *ret_prior says whether the
 * page had data in the window before the window fired (a cell whose first
 * event came while window g was still open). O(k). */
static void merge_page(const cf_winop *op, int64_t g, const page *pg, merger *mg, bool *ret_prior)
{
    bool prior = false;
    for (uint32_t j = 0; j < op->k; j++) {
        const cell *c = data_find(op, g + (int64_t)j * op->cfg.slide_ms, pg);
        if (!c)
            continue;
        /* Window g is window number k - 1 - j of pane g + j slides. */
        if (op->k - 1 - j >= c->born)
            prior = true;
        merge_cell(op, mg, c);
    }
    *ret_prior = prior;
}

/* Bytewise page order; a prefix sorts first. */
static int cmp_page(const void *a, const void *b)
{
    const page *x = *(const page *const *)a, *y = *(const page *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->bytes, y->bytes, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* Cells (data) in the panes of the window at slot index wi: walks slots
 * while they are inside the window. */
static uint32_t range_cells(const cf_winop *op, uint32_t wi, int64_t end)
{
    uint32_t n = 0;
    for (uint32_t i = wi; i < op->nslots && op->slots[i].start < end; i++)
        n += op->slots[i].ncells;
    return n;
}

/* Collects the distinct pages with data in the panes from slot index wi up
 * to (excluding) start `end` into op->gpages, sorted, each with the chain
 * of its cells (page.ghead, op->gnext). Writes through the operator's
 * scratch only. Returns the number of pages, or -ENOMEM. O(cells + pages
 * log pages). */
static int gather_range(const cf_winop *cop, uint32_t wi, int64_t end)
{
    /* The scratch members are the operator's own working memory; a const
     * operator is otherwise left as it is. */
    cf_winop *op = (cf_winop *)cop;
    uint32_t total = range_cells(op, wi, end);
    if (total > op->gcap) {
        uint32_t ncap = op->gcap ? op->gcap : 64;
        while (ncap < total)
            ncap *= 2;
        const cell **gc = realloc(op->gcell, (size_t)ncap * sizeof *gc);
        if (!gc)
            return -ENOMEM;
        op->gcell = gc;
        uint32_t *gn = realloc(op->gnext, (size_t)ncap * sizeof *gn);
        if (!gn)
            return -ENOMEM;
        op->gnext = gn;
        op->gcap = ncap;
    }
    if (total > op->gpcap) {
        uint32_t ncap = op->gpcap ? op->gpcap : 64;
        while (ncap < total)
            ncap *= 2;
        page **gp = realloc(op->gpages, (size_t)ncap * sizeof *gp);
        if (!gp)
            return -ENOMEM;
        op->gpages = gp;
        op->gpcap = ncap;
    }
    if (++op->stamp == 0) {
        /* Wrapped: old marks could match again. */
        for (uint32_t i = 0; i < op->pages_cap; i++)
            if (op->pages[i])
                op->pages[i]->mark = 0;
        op->stamp = 1;
    }
    uint32_t n = 0, np = 0;
    for (uint32_t i = wi; i < op->nslots && op->slots[i].start < end; i++)
        for (uint32_t ci = op->slots[i].head; ci != NIL;) {
            const cell *c = cell_at(op, ci);
            ci = c->next;
            if (!c->count)
                continue;
            page *pg = c->pg;
            if (pg->mark != op->stamp) {
                pg->mark = op->stamp;
                pg->ghead = NIL;
                op->gpages[np++] = pg;
            }
            op->gcell[n] = c;
            op->gnext[n] = pg->ghead;
            pg->ghead = n++;
        }
    qsort(op->gpages, np, sizeof *op->gpages, cmp_page);
    return (int)np;
}

/* gather_range over the panes of the window at slot index wi. */
static int gather(const cf_winop *op, uint32_t wi)
{
    return gather_range(op, wi, op->slots[wi].start + op->cfg.size_ms);
}

/* Asks for the sketch handles of a gathered page ahead of use: sketches
 * are cold and visited in page order, i.e. at random. */
static void prefetch_page(const cf_winop *op, const page *pg)
{
    for (uint32_t x = pg->ghead; x != NIL; x = op->gnext[x])
        if (op->gcell[x]->nusers == USERS_IN_HLL)
            __builtin_prefetch(op->gcell[x]->users.s.hll);
}

/* Emits every pair of the window at slot index wi, in page order, with
 * revision 0 (first firing or interim results). Without memory for the
 * sort it still emits them all, in no particular order. */
static void emit_window(const cf_winop *op, uint32_t wi, bool final, cf_window_emit_fn emit,
                        void *ctx)
{
    if (!emit)
        return;
    int64_t g = op->slots[wi].start;
    int np = gather(op, wi);
    if (np >= 0) {
        for (int i = 0; i < np; i++) {
            const page *pg = op->gpages[i];
            if (i + PREFETCH_AHEAD < np)
                prefetch_page(op, op->gpages[i + PREFETCH_AHEAD]);
            merger mg = {0};
            for (uint32_t x = pg->ghead; x != NIL; x = op->gnext[x])
                merge_cell(op, &mg, op->gcell[x]);
            emit_result(op, g, pg, mg.count, merge_users(op, &mg), 0, final, &mg, emit, ctx);
        }
        return;
    }
    int64_t end = g + op->cfg.size_ms;
    for (uint32_t i = wi; i < op->nslots && op->slots[i].start < end; i++)
        for (uint32_t ci = op->slots[i].head; ci != NIL;) {
            const cell *c = cell_at(op, ci);
            ci = c->next;
            if (!c->count)
                continue;
            /* Only at the page's first pane in the window. */
            bool first = true;
            for (int64_t q = g; q < c->start && first; q += op->cfg.slide_ms)
                first = !data_find(op, q, c->pg);
            if (!first)
                continue;
            merger mg = {0};
            bool prior;
            merge_page(op, g, c->pg, &mg, &prior);
            emit_result(op, g, c->pg, mg.count, merge_users(op, &mg), 0, final, &mg, emit, ctx);
        }
}

/* ---- public API --------------------------------------------------------- */

int cf_window_result_save_users(const cf_window_result *r, cf_buf *out)
{
    if (r->users_hll)
        return cf_hll_save(r->users_hll, out);
    cf_hll *h = cf_hll_new();
    if (!h)
        return -ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < r->n_users_inline && rc >= 0; i++)
        rc = cf_hll_add(h, r->users_inline[i]);
    if (rc >= 0)
        rc = cf_hll_save(h, out);
    cf_hll_free(h);
    return rc < 0 ? rc : 0;
}

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
        if (sliding_validate(c.size_ms, c.slide_ms) < 0)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    *ret = c;
    return 0;
}

/* Grows the merge scratch to the largest storage it can need (the biggest
 * sparse table and the dense registers), so that merging never allocates. */
static int prime_merge(cf_hll *m)
{
    cf_hll_clear(m);
    for (uint64_t v = 1; v <= CF_HLL_SPARSE_MAX + 1; v++)
        if (cf_hll_add(m, v) < 0)
            return -ENOMEM;
    cf_hll_clear(m);
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
    op->cap = cf_keycap_make(c.max_keys);
    op->page_seed = PAGE_SEED;
    op->wm = CF_TIME_NONE;
    op->k = (uint32_t)(c.size_ms / c.slide_ms);
    op->cell_free = NIL;
    op->merge = cf_hll_new();
    if (!op->merge || prime_merge(op->merge) < 0) {
        cf_winop_free(op);
        return NULL;
    }
    return op;
}

int cf_winop_set_hash_seed(cf_winop *op, uint64_t seed)
{
    /* Pages live only in cells, cells only in slots. */
    if (op->nslots)
        return -EBUSY;
    op->page_seed = seed ^ PAGE_SEED;
    return 0;
}

void cf_winop_free(cf_winop *op)
{
    if (!op)
        return;
    for (uint32_t ch = 0; ch < op->nchunks; ch++) {
        for (uint32_t i = 0; i < CELL_CHUNK; i++) {
            cell *c = &op->chunks[ch][i];
            if (c->pg && c->nusers == USERS_IN_HLL)
                cf_hll_free(c->users.s.hll);
        }
        free(op->chunks[ch]);
    }
    free(op->chunks);
    for (uint32_t i = 0; i < op->pages_cap; i++)
        free(op->pages[i]);
    free(op->pages);
    free(op->page_free);
    free(op->slots);
    free(op->cmap.slots);
    free(op->pmap.slots);
    cf_hll_free(op->merge);
    free(op->gcell);
    free(op->gnext);
    free(op->gpages);
    free(op);
}

/* Counts the pairs a first event of pg in pane p adds to the open windows
 * holding p (numbers nf..k-1 from first): a window gains the page unless
 * another of its panes has data for it. Looks at the nearest data pane on
 * each side, at most 2k lookups. */
static void count_open_pairs(cf_winop *op, const page *pg, int64_t p, int64_t first, uint32_t nf)
{
    const int64_t s = op->cfg.slide_ms, span = op->cfg.size_ms - s;
    if (nf >= op->k)
        return;
    int64_t gopen = first + (int64_t)nf * s;
    bool have_left = false, have_right = false;
    int64_t left = 0, right = 0;
    if (pg->refs > 0) {
        /* Stepping by index: q never leaves [gopen, p + span], which fits. */
        int64_t nl = (p - gopen) / s;
        for (int64_t d = 1; d <= nl && !have_left; d++)
            if (data_find(op, p - d * s, pg)) {
                have_left = true;
                left = p - d * s;
            }
        for (int64_t d = 1; d < (int64_t)op->k && !have_right; d++)
            if (data_find(op, p + d * s, pg)) {
                have_right = true;
                right = p + d * s;
            }
    }
    for (uint32_t j = nf; j < op->k; j++) {
        int64_t g = first + (int64_t)j * s;
        if ((have_left && left >= g) || (have_right && right <= g + span))
            continue;
        slot_find(op, g)->npairs++;
        op->open_pairs++;
    }
}

/* Everything but the hot case: a page's first event in a pane, or an event
 * in a pane some of whose windows have fired. Reserves all it may need
 * first, so that on -ENOMEM nothing has changed. */
static int add_slow(cf_winop *op, cell *c, int64_t p, int64_t first, uint64_t ph,
                    const char *page_url, size_t len, uint64_t user, cf_window_emit_fn emit,
                    void *ctx)
{
    const int64_t s = op->cfg.slide_ms, size = op->cfg.size_ms;
    uint32_t np = 0, nf;
    while (np < op->k && purge_due(op, first + (int64_t)np * s + size))
        np++;
    for (nf = np; nf < op->k && fire_due(op, first + (int64_t)nf * s + size); nf++)
        ;
    page *pg = c ? c->pg : page_find(op, ph, page_url, len);
    bool interned = false;
    if (!pg) {
        /* A page the operator does not hold: the key bound applies. Refusing
         * (rather than evicting a held page) keeps every held page's
         * results exact: an evicted page's open windows would fire short. */
        if (!cf_keycap_admit(&op->cap, op->pmap.used))
            return -ENOSPC;
        if (!(pg = page_intern(op, ph, page_url, len)))
            return -ENOMEM;
        interned = true;
    }
    /* Slots for the pane and every live window holding it; cells for the
     * pane data and a record per fired window. */
    if (slots_reserve(op, op->k - np + 1) < 0 || cells_reserve(op, 1 + (nf - np)) < 0) {
        if (interned)
            page_release(op, pg);
        return -ENOMEM;
    }
    bool new_data = !c || c->count == 0;
    if (!new_data) {
        int rc = cell_add_user(op, c, user);
        if (rc < 0)
            return rc;
        c->count++;
    }
    for (uint32_t j = np; j < op->k; j++)
        slot_get(op, first + (int64_t)j * s);
    if (new_data) {
        count_open_pairs(op, pg, p, first, nf);
        if (!c)
            c = cell_new(op, slot_find(op, p), pg);
        c->born = (uint16_t)nf;
        (void)cell_add_user(op, c, user); /* the first user goes inline */
        c->count = 1;
    }
    /* Re-fire the fired windows, ascending. */
    for (uint32_t j = np; j < nf; j++) {
        int64_t g = first + (int64_t)j * s;
        merger mg = {0};
        bool prior;
        merge_page(op, g, pg, &mg, &prior);
        cell *r = g == p ? c : cell_find(op, g, pg);
        if (!r || !r->rec) {
            slot *sl = slot_find(op, g);
            if (!r)
                r = cell_new(op, sl, pg);
            r->rec = 1;
            /* A page that was in the window when it fired had revision 0
             * then; one new to the fired window is a new kept pair. */
            if (prior) {
                r->revision = 1;
            } else {
                r->revision = 0;
                sl->npairs++;
                op->kept_pairs++;
            }
        } else {
            r->revision++;
        }
        emit_result(op, g, pg, mg.count, merge_users(op, &mg), r->revision, true, &mg, emit,
                    ctx);
    }
    return (int)(op->k - np);
}

/* Hot path: an event in a pane that has data for its page and whose
 * windows are all open costs one map probe and one sketch update, and
 * allocates nothing unless the sketch grows. Re-fired results are emitted
 * in ascending window order; emit must not call back into the operator. A
 * timestamp whose windows do not fit in int64 ms is in no window and
 * returns 0; a page longer than MAX_PAGE_LEN gives -EINVAL. On -ENOMEM
 * nothing has changed. */
int cf_winop_add(cf_winop *op, const char *page_url, size_t len, uint64_t user_hash, int64_t ts,
                 cf_window_emit_fn emit, void *ctx)
{
    if (len > MAX_PAGE_LEN)
        return -EINVAL;
    int64_t p, first;
    if (!pane_of(op, ts, &p, &first) || purge_due(op, p + op->cfg.size_ms))
        return 0;
    uint64_t ph = cf_hash64(page_url, len, op->page_seed);
    cell *c = cell_lookup(op, p, ph, page_url, len);
    if (c && c->count && !fire_due(op, first + op->cfg.size_ms)) {
        int rc = cell_add_user(op, c, user_hash);
        if (rc < 0)
            return rc;
        c->count++;
        return (int)op->k;
    }
    return add_slow(op, c, p, first, ph, page_url, len, user_hash, emit, ctx);
}

/* Fires every window that became due, ascending by start (= end), each
 * window's pages in bytewise order, then purges the slots of windows past
 * their lateness. emit must not call back into the operator. O(slots) plus the merging of each fired window's panes;
 * O(1) when nothing is due. */
void cf_winop_advance(cf_winop *op, int64_t wm, cf_window_emit_fn emit, void *ctx)
{
    if (wm <= op->wm)
        return;
    int64_t old = op->wm;
    op->wm = wm;
    for (uint32_t i = 0; i < op->nslots; i++) {
        const slot *sl = &op->slots[i];
        int64_t last = sl->start + op->cfg.size_ms - 1;
        if (old != CF_TIME_NONE && last <= old)
            continue;   /* fired before */
        if (last > wm)
            break;
        if (sl->npairs == 0)
            continue;
        emit_window(op, i, true, emit, ctx);
        op->open_pairs -= sl->npairs;
        op->kept_pairs += sl->npairs;
    }
    uint32_t n = 0;
    while (n < op->nslots && purge_due(op, op->slots[n].start + op->cfg.size_ms)) {
        slot *sl = &op->slots[n];
        for (uint32_t ci = sl->head; ci != NIL;) {
            cell *c = cell_at(op, ci);
            ci = c->next;
            cell_destroy(op, c);
        }
        op->kept_pairs -= sl->npairs;
        n++;
    }
    if (n) {
        memmove(op->slots, &op->slots[n], (size_t)(op->nslots - n) * sizeof *op->slots);
        op->nslots -= n;
    }
}

/* Interim results of every open window, computed page by page (all open
 * windows of one page in a row, while its pane sketches are in cache: a
 * page's panes are shared by up to k open windows), then emitted window by
 * window. Returns 0, or -ENOMEM / -E2BIG (nothing emitted: the caller goes
 * window by window instead). */
static int emit_open_page_major(const cf_winop *op, cf_window_emit_fn emit, void *ctx)
{
    if (op->nslots == 0)
        return 0;
    uint32_t *wslot = malloc((size_t)op->nslots * sizeof *wslot), nw = 0;
    if (!wslot)
        return -ENOMEM;
    for (uint32_t i = 0; i < op->nslots; i++)
        if (op->slots[i].npairs > 0 && !fire_due(op, op->slots[i].start + op->cfg.size_ms))
            wslot[nw++] = i;
    if (nw == 0) {
        free(wslot);
        return 0;
    }
    uint32_t first = wslot[0];
    int64_t end = op->slots[wslot[nw - 1]].start + op->cfg.size_ms;
    int np = gather_range(op, first, end);
    /* A results table of windows x pages: bounded, else window by window. */
    if (np < 0 || (uint64_t)nw * (uint64_t)np > (1u << 22)) {
        free(wslot);
        return np < 0 ? np : -E2BIG;
    }
    size_t cells = (size_t)nw * (size_t)np;
    uint64_t *res = malloc((cells ? cells : 1) * 2 * sizeof *res);
    if (!res) {
        free(wslot);
        return -ENOMEM;
    }
    for (int pi = 0; pi < np; pi++) {
        const page *pg = op->gpages[pi];
        if (pi + PREFETCH_AHEAD < np)
            prefetch_page(op, op->gpages[pi + PREFETCH_AHEAD]);
        for (uint32_t w = 0; w < nw; w++) {
            int64_t g = op->slots[wslot[w]].start, gend = g + op->cfg.size_ms;
            merger mg = {0};
            for (uint32_t x = pg->ghead; x != NIL; x = op->gnext[x]) {
                const cell *c = op->gcell[x];
                if (c->start >= g && c->start < gend)
                    merge_cell(op, &mg, c);
            }
            uint64_t *r = &res[((size_t)w * (size_t)np + (size_t)pi) * 2];
            r[0] = mg.count;
            r[1] = mg.n ? merge_users(op, &mg) : 0;
        }
    }
    for (uint32_t w = 0; w < nw; w++) {
        int64_t g = op->slots[wslot[w]].start;
        for (int pi = 0; pi < np; pi++) {
            const uint64_t *r = &res[((size_t)w * (size_t)np + (size_t)pi) * 2];
            if (r[0])
                emit_result(op, g, op->gpages[pi], r[0], r[1], 0, false, NULL, emit, ctx);
        }
    }
    free(res);
    free(wslot);
    return 0;
}

/* Interim results of the open windows, ascending by start, pages in
 * bytewise order. Uses the operator's merge scratch: emit must not call
 * back into the operator (as for add() and advance()). O(cells of the open
 * windows' panes + pages log pages). */
void cf_winop_foreach_open(const cf_winop *op, cf_window_emit_fn emit, void *ctx)
{
    if (!emit)
        return;
    if (emit_open_page_major(op, emit, ctx) == 0)
        return;
    for (uint32_t i = 0; i < op->nslots; i++)
        if (op->slots[i].npairs > 0 && !fire_due(op, op->slots[i].start + op->cfg.size_ms))
            emit_window(op, i, false, emit, ctx);
}

size_t cf_winop_open_count(const cf_winop *op)
{
    return op->open_pairs;
}

size_t cf_winop_kept_count(const cf_winop *op)
{
    return op->kept_pairs;
}

size_t cf_winop_keys(const cf_winop *op)
{
    return op->pmap.used;
}

uint64_t cf_winop_refused(const cf_winop *op)
{
    return op->cap.refused;
}

size_t cf_winop_memory(const cf_winop *op)
{
    size_t m = sizeof *op;
    m += (size_t)op->nchunks * (CELL_CHUNK * sizeof(cell) + sizeof(cell *));
    m += (size_t)op->pages_cap * (sizeof(page *) + sizeof(uint32_t)) + op->page_bytes;
    m += (size_t)op->slots_cap * sizeof(slot);
    if (op->cmap.slots)
        m += ((size_t)op->cmap.mask + 1) * sizeof(mslot);
    if (op->pmap.slots)
        m += ((size_t)op->pmap.mask + 1) * sizeof(mslot);
    m += cf_hll_memory(op->merge);
    m += (size_t)op->gcap * (sizeof *op->gcell + sizeof *op->gnext);
    m += (size_t)op->gpcap * sizeof *op->gpages;
    return m + op->hll_bytes;
}

/* ---- snapshot ------------------------------------------------------------
 * u32 magic, u8 type, i64 size, slide, lateness, i64 watermark, u64 refused
 * (CFW3 only; CFW2 has no such field), u32 slots;
 * per slot holding cells, ascending by start: i64 start, u32 cells; per
 * cell in page order: str page, u64 count, u8 rec, u32 revision, u16 born,
 * u8 nusers, then nusers x u64 (inline) or a cf_hll encoding (nusers =
 * 255). Pair counts are not stored: load() derives them from the panes.
 * Canonical: equal states give equal bytes, up to the order of inline user
 * hashes. */

static int cmp_cell_page(const void *a, const void *b)
{
    const page *x = (*(const cell *const *)a)->pg, *y = (*(const cell *const *)b)->pg;
    return cmp_page(&x, &y);
}

int cf_winop_save(const cf_winop *op, cf_buf *out)
{
    cf_buf_put_u32(out, SAVE_MAGIC);
    cf_buf_put_u8(out, (uint8_t)op->cfg.type);
    cf_buf_put_i64(out, op->cfg.size_ms);
    cf_buf_put_i64(out, op->cfg.slide_ms);
    cf_buf_put_i64(out, op->cfg.allowed_lateness_ms);
    cf_buf_put_i64(out, op->wm);
    cf_buf_put_u64(out, op->cap.refused);
    uint32_t ns = 0, maxn = 0;
    for (uint32_t i = 0; i < op->nslots; i++)
        if (op->slots[i].ncells > 0) {
            ns++;
            if (op->slots[i].ncells > maxn)
                maxn = op->slots[i].ncells;
        }
    cf_buf_put_u32(out, ns);
    if (ns == 0)
        return out->oom ? -ENOMEM : 0;
    const cell **cs = malloc((size_t)maxn * sizeof *cs);
    if (!cs)
        return -ENOMEM;
    for (uint32_t i = 0; i < op->nslots; i++) {
        const slot *sl = &op->slots[i];
        if (sl->ncells == 0)
            continue;
        cf_buf_put_i64(out, sl->start);
        cf_buf_put_u32(out, sl->ncells);
        uint32_t n = 0;
        for (uint32_t ci = sl->head; ci != NIL; ci = cell_at(op, ci)->next)
            cs[n++] = cell_at(op, ci);
        qsort(cs, n, sizeof *cs, cmp_cell_page);
        for (uint32_t j = 0; j < n; j++) {
            const cell *c = cs[j];
            cf_buf_put_str(out, c->pg->bytes, c->pg->len);
            cf_buf_put_u64(out, c->count);
            cf_buf_put_u8(out, c->rec);
            cf_buf_put_u32(out, c->revision);
            cf_buf_put_u16(out, c->born);
            cf_buf_put_u8(out, c->nusers);
            if (c->nusers == USERS_IN_HLL)
                cf_hll_save(c->users.s.hll, out);
            else
                for (uint8_t u = 0; u < c->nusers; u++)
                    cf_buf_put_u64(out, c->users.inl[u]);
        }
    }
    free(cs);
    return out->oom ? -ENOMEM : 0;
}

/* Windows of a pane at q that have fired under the current watermark. */
static uint32_t fired_windows(const cf_winop *op, int64_t q)
{
    int64_t first = q - (op->cfg.size_ms - op->cfg.slide_ms);
    uint32_t nf = 0;
    while (nf < op->k && fire_due(op, first + (int64_t)nf * op->cfg.slide_ms + op->cfg.size_ms))
        nf++;
    return nf;
}

/* Reads one cell into slot g. Rejects a page seen twice in the slot, a
 * cell with neither data nor record, users without data, a record or
 * revision on a window that has not fired, and a birth after the present. */
static int load_cell(cf_winop *op, int64_t g, cf_reader *in)
{
    const char *s;
    size_t len;
    uint64_t count;
    uint32_t rev;
    uint16_t born;
    uint8_t rec, nu;
    if (!cf_get_str(in, &s, &len) || !cf_get_u64(in, &count) || !cf_get_u8(in, &rec) ||
        !cf_get_u32(in, &rev) || !cf_get_u16(in, &born) || !cf_get_u8(in, &nu) ||
        len > MAX_PAGE_LEN || rec > 1 || (!rec && (count == 0 || rev != 0)) ||
        (rec && !fire_due(op, g + op->cfg.size_ms)) ||
        (count == 0 ? (nu != 0 || born != 0) : nu == 0) ||
        (nu > INLINE_USERS && nu != USERS_IN_HLL))
        return -EINVAL;
    /* Pane data exists only for a pane all of whose windows fit. */
    int64_t p, first;
    if (count && (!pane_of(op, g, &p, &first) || born > fired_windows(op, g)))
        return -EINVAL;
    uint64_t ph = cf_hash64(s, len, op->page_seed);
    page *pg = page_find(op, ph, s, len);
    if (pg && cell_find(op, g, pg))
        return -EINVAL;
    if (!pg && !(pg = page_intern(op, ph, s, len)))
        return -ENOMEM;
    if (cells_reserve(op, 1) < 0) {
        if (pg->refs == 0)
            page_release(op, pg);
        return -ENOMEM;
    }
    cell *c = cell_new(op, slot_find(op, g), pg);
    c->count = count;
    c->revision = rev;
    c->rec = rec;
    c->born = born;
    if (nu == USERS_IN_HLL) {
        cf_hll *h = cf_hll_load(in);
        if (!h)
            return -EINVAL;
        c->users.s.hll = h;
        c->users.s.mem = cf_hll_memory(h);
        c->nusers = USERS_IN_HLL;
        op->hll_bytes += c->users.s.mem;
        return 0;
    }
    for (uint8_t u = 0; u < nu; u++) {
        uint64_t v;
        if (!cf_get_u64(in, &v))
            return -EINVAL;
        for (uint8_t x = 0; x < c->nusers; x++)
            if (c->users.inl[x] == v)
                return -EINVAL;
        c->users.inl[c->nusers++] = v;
    }
    return 0;
}

/* After the cells are in: creates the slots of live windows holding data
 * panes, derives every window's pair count from its panes, and checks the
 * records (a record needs data in its window; a page that was in the
 * window when it fired cannot be at revision 0 with a record). */
static int load_finish(cf_winop *op)
{
    const int64_t s = op->cfg.slide_ms, size = op->cfg.size_ms;
    uint32_t n0 = op->nslots;
    int64_t *panes = malloc((size_t)(n0 ? n0 : 1) * sizeof *panes);
    if (!panes)
        return -ENOMEM;
    uint32_t npanes = 0;
    for (uint32_t i = 0; i < n0; i++) {
        bool data = false;
        for (uint32_t ci = op->slots[i].head; ci != NIL && !data; ci = cell_at(op, ci)->next)
            data = cell_at(op, ci)->count > 0;
        if (data)
            panes[npanes++] = op->slots[i].start;
    }
    int rc = 0;
    for (uint32_t i = 0; i < npanes && rc == 0; i++) {
        int64_t first = panes[i] - (size - s);
        if ((rc = slots_reserve(op, op->k)) < 0)
            break;
        for (uint32_t j = 0; j < op->k; j++)
            if (!purge_due(op, first + (int64_t)j * s + size))
                slot_get(op, first + (int64_t)j * s);
    }
    free(panes);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < op->nslots; i++) {
        int np = gather(op, i);
        if (np < 0)
            return np;
        slot *sl = &op->slots[i];
        sl->npairs = (uint32_t)np;
        if (fire_due(op, sl->start + size))
            op->kept_pairs += (uint32_t)np;
        else
            op->open_pairs += (uint32_t)np;
        for (uint32_t ci = sl->head; ci != NIL; ci = cell_at(op, ci)->next) {
            const cell *c = cell_at(op, ci);
            if (!c->rec)
                continue;
            merger mg = {0};
            bool prior;
            merge_page(op, sl->start, c->pg, &mg, &prior);
            if (mg.n == 0 || (prior && c->revision == 0))
                return -EINVAL;
        }
    }
    return 0;
}

/* Reads past one saved cell (a page another shard keeps after a rescale).
 * 0 or -EINVAL. */
static int skip_cell(cf_reader *in)
{
    const char *s;
    size_t len;
    uint64_t count;
    uint32_t rev;
    uint16_t born;
    uint8_t rec, nu;
    if (!cf_get_str(in, &s, &len) || !cf_get_u64(in, &count) || !cf_get_u8(in, &rec) ||
        !cf_get_u32(in, &rev) || !cf_get_u16(in, &born) || !cf_get_u8(in, &nu))
        return -EINVAL;
    if (nu == USERS_IN_HLL) {
        cf_hll *h = cf_hll_load(in);
        if (!h)
            return -EINVAL;
        cf_hll_free(h);
        return 0;
    }
    for (uint8_t u = 0; u < nu; u++) {
        uint64_t v;
        if (!cf_get_u64(in, &v))
            return -EINVAL;
    }
    return 0;
}

/* The page of the next saved cell, without consuming it. */
static bool peek_page(const cf_reader *in, const char **s, size_t *len)
{
    cf_reader r = *in;
    return cf_get_str(&r, s, len);
}

/* One saved operator into op (cells of pages keep() refuses are skipped). */
static int load_part(cf_winop *op, cf_reader *in, bool first, cf_winop_keep_fn keep,
                     void *ctx)
{
    uint32_t magic, ns;
    uint8_t type;
    int64_t size, slide, late, wm;
    uint64_t refused = 0;
    if (!cf_get_u32(in, &magic) || !cf_get_u8(in, &type) || !cf_get_i64(in, &size) ||
        !cf_get_i64(in, &slide) || !cf_get_i64(in, &late) || !cf_get_i64(in, &wm) ||
        (magic == SAVE_MAGIC && !cf_get_u64(in, &refused)) || !cf_get_u32(in, &ns))
        return -EINVAL;
    if ((magic != SAVE_MAGIC && magic != SAVE_MAGIC_V2) || type != (uint8_t)op->cfg.type ||
        size != op->cfg.size_ms ||
        slide != op->cfg.slide_ms || late != op->cfg.allowed_lateness_ms)
        return -EINVAL;
    /* Every shard saw the same markers: the parts of one snapshot agree. */
    if (!first && wm != op->wm)
        return -EINVAL;
    op->wm = wm;
    /* A rescale (keep != NULL) reads every part into every shard: the refusal
     * count would be multiplied, so it restarts at zero. */
    if (!keep)
        op->cap.refused += refused;
    bool have_prev = false;
    int64_t prev = 0;
    for (uint32_t i = 0; i < ns; i++) {
        int64_t start, end;
        uint32_t nc;
        if (!cf_get_i64(in, &start) || !cf_get_u32(in, &nc) || nc == 0)
            return -EINVAL;
        /* Slots come strictly ascending, aligned to the slide, their window
         * fitting in int64, and not yet due for purging (a saved operator
         * holds none). */
        if ((have_prev && start <= prev) || start % op->cfg.slide_ms != 0 ||
            __builtin_add_overflow(start, op->cfg.size_ms, &end) || purge_due(op, end))
            return -EINVAL;
        have_prev = true;
        prev = start;
        bool made = false;
        for (uint32_t j = 0; j < nc; j++) {
            const char *pg;
            size_t plen;
            if (keep && (!peek_page(in, &pg, &plen) || !keep(ctx, pg, plen))) {
                if (skip_cell(in) < 0)
                    return -EINVAL;
                continue;
            }
            /* The slot exists only once a cell is kept in it. */
            if (!made) {
                if (slots_reserve(op, 1) < 0)
                    return -ENOMEM;
                slot_get(op, start);
                made = true;
            }
            if (load_cell(op, start, in) < 0)
                return -EINVAL;
        }
    }
    return 0;
}

cf_winop *cf_winop_load(const cf_winop_config *cfg, cf_reader *in)
{
    return cf_winop_load_parts(cfg, 0, in, 1, NULL, NULL);
}

cf_winop *cf_winop_load_parts(const cf_winop_config *cfg, uint64_t hash_seed,
                              cf_reader *parts, size_t n, cf_winop_keep_fn keep, void *ctx)
{
    cf_winop *op = cf_winop_new(cfg);
    if (!op)
        return NULL;
    (void)cf_winop_set_hash_seed(op, hash_seed);
    for (size_t i = 0; i < n; i++)
        if (load_part(op, &parts[i], i == 0, keep, ctx) < 0)
            goto fail;
    if (load_finish(op) < 0)
        goto fail;
    return op;
fail:
    cf_winop_free(op);
    return NULL;
}
