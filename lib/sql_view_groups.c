/* sql_view_groups.c: keys, the group table and the session groups' blocks,
 * and the heap of sessions or running groups. */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_kv.h"

/* Session group blocks (blk_alloc): chunks double from BLK_CHUNK_MIN to
 * BLK_CHUNK_MAX (size classes: BLK_GRAIN, BLK_CLASSES, sql_view_int.h). */
#define BLK_CHUNK_MIN ((size_t)64 << 10)
#define BLK_CHUNK_MAX ((size_t)4 << 20)

/* ---- keys ----------------------------------------------------------------- */

uint64_t sql_view_value_hash(uint64_t base, sql_value x)
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

/* ---- the group table: linear probing, backward-shift deletion ------------
 * Slots hold (tag, distance from home, address) (pslot, sql_view_int.h). */

/* Distance of slot i's entry from its home: from the slot, or from the
 * group's hash when the slot says PSLOT_FAR. */
static inline uint32_t slot_dist(const pmap *m, uint32_t i)
{
    uint32_t d = pslot_dist(m->s[i]);
    if (d < PSLOT_FAR)
        return d;
    return (i - (uint32_t)pslot_group(m->s[i])->hash) & m->mask;
}

/* Prefetch distance of a rehash: it reads every group in slot order (in
 * memory, at random) for its hash, so the reads are issued ahead and
 * overlap. */
enum { REHASH_AHEAD = 8 };

static int pmap_reserve(pmap *m, uint32_t n)
{
    uint64_t cap = m->s ? (uint64_t)m->mask + 1 : 0;
    uint64_t ncap = sql_view_table_cap(cap, (uint64_t)m->used + n);
    if (ncap == cap)
        return 0;
    if (!ncap)
        return -ENOMEM;
    pslot *s = cf_kv_table_alloc((size_t)ncap * sizeof *s); /* the process's, when large */
    if (!s)
        return -ENOMEM;
    uint32_t nmask = (uint32_t)(ncap - 1);
    for (uint64_t i = 0; i < cap; i++) {
        if (i + REHASH_AHEAD < cap && m->s[i + REHASH_AHEAD].w)
            __builtin_prefetch(pslot_group(m->s[i + REHASH_AHEAD]));
        if (m->s[i].w) {
            const group *g = pslot_group(m->s[i]);
            uint32_t home = (uint32_t)g->hash & nmask, j = home;
            while (s[j].w)
                j = (j + 1) & nmask;
            s[j] = pslot_make(g, g->hash, (j - home) & nmask);
        }
    }
    cf_kv_table_free(m->s, (size_t)cap * sizeof(pslot));
    m->s = s;
    m->mask = nmask;
    return 0;
}

/* Needs room (pmap_reserve) and an address that fits a slot. */
static void pmap_put(pmap *m, uint64_t h, const group *g)
{
    uint32_t home = (uint32_t)h & m->mask, i = home;
    while (m->s[i].w)
        i = (i + 1) & m->mask;
    m->s[i] = pslot_make(g, h, (i - home) & m->mask);
    m->used++;
}

static void pmap_del(pmap *m, uint64_t h, const group *g)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (pslot_group(m->s[i]) != g)
        i = (i + 1) & m->mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (!m->s[j].w)
            break;
        uint32_t dj = slot_dist(m, j), gap = (j - i) & m->mask;
        if (dj >= gap) {
            const group *x = pslot_group(m->s[j]);
            /* The tag's bits are the slot's own: the hash is not needed. */
            m->s[i] = pslot_make(x, m->s[j].w, dj - gap);
            i = j;
        }
    }
    m->s[i].w = 0;
    m->used--;
}

/* The slot of g (hash h) now holds n, at the same place. */
static void pmap_repoint(pmap *m, uint64_t h, const group *g, const group *n)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (pslot_group(m->s[i]) != g)
        i = (i + 1) & m->mask;
    m->s[i].w = (m->s[i].w & ~((UINT64_C(1) << PSLOT_ADDR_BITS) - 1)) | (uint64_t)(uintptr_t)n >> 3;
}

size_t sql_view_pmap_bytes(const pmap *m)
{
    return m->s ? ((size_t)m->mask + 1) * sizeof(pslot) : 0;
}

/* ---- groups ---------------------------------------------------------------- */

group *sql_view_group_find(const sql_view *v, uint64_t h, const sql_value *key)
{
    if (!v->groups.s)
        return NULL;
    for (uint32_t i = (uint32_t)h & v->groups.mask;; i = (i + 1) & v->groups.mask) {
        pslot s = v->groups.s[i];
        if (!s.w)
            return NULL;
        if (pslot_may_be(s, h)) {
            group *g = pslot_group(s);
            if (g->hash == h && key_eq(g, key, v->cfg.nkeys))
                return g;
        }
    }
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
    return (n + BLK_GRAIN - 1) & ~(size_t)(BLK_GRAIN - 1);
}

static void *blk_alloc(sql_view *v, size_t n)
{
    n = blk_round(n);
    if (n > BLK_MAX)
        return malloc(n);
    void **head = &v->bfree[n / BLK_GRAIN - 1];
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
    if (n > BLK_MAX) {
        free(p);
        return;
    }
    void **head = &v->bfree[n / BLK_GRAIN - 1];
    memcpy(p, head, sizeof *head);
    *head = p;
}

void sql_view_blk_free_all(sql_view *v)
{
    for (uint32_t i = 0; i < v->nbchunks; i++)
        cf_kv_table_free(v->bchunks[i], i < 6 ? BLK_CHUNK_MIN << i : BLK_CHUNK_MAX);
    free(v->bchunks);
}

/* A new group with a copy of key (running views: with an empty state;
 * inline_sess: with room for one session, SINL_USED, see SINL_*). */
group *sql_view_group_new(sql_view *v, uint64_t h, const sql_value *key, int inline_sess)
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
    size_t blk = off + align8(strs) + (inline_sess == GROUP_SESS_ONE ? SESS_ONE_SIZE : v->sess_size);
    group *g = inline_sess ? blk_alloc(v, blk) : malloc(off + st + strs);
    if (!g)
        return NULL;
    if (!pslot_fits(g)) {
        /* An address past 48 bits or not 8-aligned does not fit a table
         * slot (pslot): not seen on Linux, where user space stays below
         * 2^47 unless mmap is asked for more, and malloc aligns to 16. */
        if (inline_sess)
            blk_free(v, g, blk);
        else
            free(g);
        return NULL;
    }
    memset(g, 0, offsetof(group, key));
    g->hash = h;
    if (inline_sess)
        g->sinl = SINL_USED;
    g->sinl_one = inline_sess == GROUP_SESS_ONE;
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

void sql_view_group_unref(sql_view *v, group *g)
{
    if (--g->refs == 0)
        group_free(v, g);
}

/* Frees a session's record (its state already fini'ed, out of its
 * group's list), or gives its group back the inline slot; before the
 * group's last unref. */
void sql_view_sess_release(const sql_view *v, group *g, sess *x)
{
    if (g->sinl == SINL_USED && x == group_inline_sess(v, g))
        g->sinl = SINL_FREE;
    else
        free(x);
}

/* Moves g, whose inline session is a one-event record in use, to a full
 * block: the header, keys and strings are copied, the key values re-pointed
 * at the new strings, the table slot, the list (its head or the link to
 * the record, and the last record's link to the group) and the heap entry
 * moved over, and the event turned into states in the new block. */
group *sql_view_group_grow(sql_view *v, group *g)
{
    uint32_t nk = v->cfg.nkeys;
    size_t off = group_state_off(nk), strs = group_strs(v, g);
    size_t old_size = group_block_size(v, g);
    group *n = blk_alloc(v, off + align8(strs) + v->sess_size);
    if (!n)
        return NULL;
    if (!pslot_fits(n)) {
        blk_free(v, n, off + align8(strs) + v->sess_size);
        return NULL;
    }
    sess *oi = group_inline_sess(v, g);
    memcpy(n, g, off + align8(strs) + sizeof(sess));
    n->sinl_one = 0;
    sess *ni = group_inline_sess(v, n);
    if (sql_view_sess_one_expand(v, oi, sess_state(ni)) < 0) {
        sql_agg_fini(v->aggs, sess_state(ni));
        blk_free(v, n, off + align8(strs) + v->sess_size);
        return NULL;
    }
    sql_view_sess_fini(v, g, oi);
    char *p = (char *)n + off;
    for (uint32_t i = 0; i < nk; i++)
        if (is_text(n->key[i].type)) {
            n->key[i].u.s = p;
            p += n->key[i].len;
        }
    pmap_repoint(&v->groups, g->hash, g, n);
    if (n->sessions == oi)
        n->sessions = ni;
    for (sess *x = n->sessions;;) {
        if (x->link & 1) {
            x->link = (uintptr_t)n | 1;
            break;
        }
        if ((sess *)x->link == oi)
            x->link = (uintptr_t)ni;
        x = (sess *)x->link;
    }
    if (ni->heap_pos != NIL_POS)
        v->heap[ni->heap_pos] = ni;
    blk_free(v, g, old_size);
    return n;
}

/* ---- heap (sessions or running groups) -------------------------------------- */

/* A private copy, not cf_heap: the comparison and the position update are
 * inlined here. Ported onto cf_heap (indirect less and moved calls),
 * sql_view_bench lost about 10% on sessions (best of 4 alternating runs,
 * 1M events, 300k users: 1.11M vs 1.23M events/cpu-s) and about 8% on
 * trending (11.5M vs 12.6M), so this copy stays. */

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
 * the placed times given (ka, kb: from heap_key). The
 * tie-breaks are read live: only the time is lazy. */
static bool node_less(const sql_view *v, const void *a, int64_t ka, const void *b, int64_t kb)
{
    if (ka != kb)
        return ka < kb;
    if (v->cfg.window == SQL_WINDOW_SESSION) {
        const sess *sa = a, *sb = b;
        const group *ga = sess_group(sa), *gb = sess_group(sb);
        if (ga != gb) {
            int c = key_cmp(ga->key, gb->key, v->cfg.nkeys);
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

/* Sifts heap[pos] up; its placed time is heap_key[pos] (the caller may
 * just have changed it). */
void sql_view_heap_up(sql_view *v, uint32_t pos)
{
    void *p = v->heap[pos];
    int64_t k = v->heap_key[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!node_less(v, p, k, v->heap[parent], v->heap_key[parent]))
            break;
        heap_set(v, pos, v->heap[parent], v->heap_key[parent]);
        pos = parent;
    }
    heap_set(v, pos, p, k);
}

void sql_view_heap_down(sql_view *v, uint32_t pos)
{
    void *p = v->heap[pos];
    int64_t k = v->heap_key[pos];
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

int sql_view_heap_reserve(sql_view *v)
{
    if (v->heap_n < v->heap_cap)
        return 0;
    /* Grows by half, not double: the heap is 16 bytes per session, and a
     * doubling left up to half of it unused (S4 counts it per open
     * session). In the server a large array's realloc is an mremap, not a
     * copy (server/mem_tune.c). */
    if (v->heap_cap >= (1u << 30))
        return -ENOMEM;
    uint32_t ncap = v->heap_cap ? v->heap_cap + v->heap_cap / 2 : 64;
    if (ncap > (1u << 30))
        ncap = 1u << 30;
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

/* Needs room (sql_view_heap_reserve). */
void sql_view_heap_push(sql_view *v, void *p, int64_t key)
{
    v->heap[v->heap_n] = p;
    v->heap_key[v->heap_n] = key;
    node_setpos(v, p, v->heap_n);
    sql_view_heap_up(v, v->heap_n++);
}

void sql_view_heap_remove(sql_view *v, void *p)
{
    uint32_t pos = node_pos(v, p);
    void *last = v->heap[--v->heap_n];
    node_setpos(v, p, NIL_POS);
    if (pos == v->heap_n)
        return;
    heap_set(v, pos, last, v->heap_key[v->heap_n]);
    sql_view_heap_up(v, pos);
    sql_view_heap_down(v, node_pos(v, last));
}

/* Re-places the heap top until its placed time is its true one, so that it
 * is the true minimum. */
void *sql_view_heap_settle_top(sql_view *v)
{
    while (v->heap_n) {
        void *top = v->heap[0];
        int64_t t;
        if (v->cfg.window == SQL_WINDOW_SESSION)
            t = sess_action_at(v, top);
        else
            t = ((group *)top)->last_ts;
        if (t == v->heap_key[0])
            return top;
        v->heap_key[0] = t;
        sql_view_heap_down(v, 0);
    }
    return NULL;
}
