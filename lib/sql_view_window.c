/* sql_view_window.c: TUMBLING and HOPPING views: panes, slots and cells,
 * late events and firing. An event's hot case (its cell has pane data and
 * no window of the pane fired) is apply_window in sql_view_int.h. */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int sql_view_slots_reserve(sql_view *v, uint32_t n)
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

/* Slot g, created if missing; needs room (sql_view_slots_reserve). Slot pointers
 * are valid until the next creation. */
wslot *sql_view_slot_get(sql_view *v, int64_t g)
{
    uint32_t i = slot_lower(v, g);
    if (i < v->nslots && v->slots[i].start == g)
        return &v->slots[i];
    memmove(&v->slots[i + 1], &v->slots[i], (size_t)(v->nslots - i) * sizeof *v->slots);
    v->nslots++;
    v->slots[i] = (wslot){.start = g};
    return &v->slots[i];
}

cell *sql_view_cell_find(const sql_view *v, int64_t g, const group *grp)
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
    const cell *c = sql_view_cell_find(v, g, grp);
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
    uint64_t ncap = sql_view_table_cap(cap, (uint64_t)v->cused + n);
    if (ncap == cap)
        return 0;
    if (!ncap)
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
int sql_view_cells_reserve(sql_view *v, uint32_t n)
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
 * (sql_view_cells_reserve). */
cell *sql_view_cell_new(sql_view *v, wslot *sl, group *grp)
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
    sql_view_group_unref(v, c->g);
    c->g = NULL;
    v->free_idx[v->nfree++] = idx;
}

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

const void *sql_view_merged_state(const sql_view *v, const merger *mg)
{
    return mg->n == 1 ? cell_state(mg->one) : v->scratch;
}

/* Merges window g for one group by k lookups. *ret_prior says whether the
 * group had data in the window before the window fired. O(k). */
void sql_view_merge_group(const sql_view *v, int64_t g, const group *grp, merger *mg,
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
    return sql_view_sort_reserve(v, ncap);
}

/* A fresh mark for a walk that visits each group of a window once. */
static uint32_t next_stamp(sql_view *v)
{
    if (++v->stamp == 0) {
        /* Wrapped: old marks could match again. */
        for (uint32_t i = 0; v->groups.s && i <= v->groups.mask; i++)
            if (v->groups.s[i].w)
                pslot_group(v->groups.s[i])->mark = 0;
        v->stamp = 1;
    }
    return v->stamp;
}

/* Collects the distinct groups with data in the panes of the window at
 * slot index wi into v->sort, in no order, each with the chain of its
 * cells (group.ghead, v->gnext). Returns the number of groups or -ENOMEM.
 * O(cells). */
int sql_view_gather(const sql_view *cv, uint32_t wi)
{
    sql_view *v = (sql_view *)cv; /* scratch only */
    int64_t end = v->slots[wi].start + v->cfg.size_ms;
    uint32_t total = 0;
    for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
        total += v->slots[i].n;
    if (gather_reserve(v, total) < 0)
        return -ENOMEM;
    uint32_t stamp = next_stamp(v);
    uint32_t n = 0, ng = 0;
    for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
        for (const cell *c = v->slots[i].head; c; c = c->next) {
            if (!c->has_data)
                continue;
            group *g = c->g;
            if (g->mark != stamp) {
                g->mark = stamp;
                g->ghead = UINT32_MAX;
                v->sort[ng++] = g;
            }
            v->gcell[n] = c;
            v->gnext[n] = g->ghead;
            g->ghead = n++;
        }
    return (int)ng;
}

size_t sql_view_count_window(const sql_view *cv, uint32_t wi)
{
    sql_view *v = (sql_view *)cv; /* marks only */
    size_t n = 0;
    if (v->k == 1) {
        /* One pane per window, one cell per group in it: count the cells,
         * without loading the groups. */
        for (const cell *c = v->slots[wi].head; c; c = c->next)
            n += c->has_data;
        return n;
    }
    int64_t end = v->slots[wi].start + v->cfg.size_ms;
    uint32_t stamp = next_stamp(v);
    for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
        for (const cell *c = v->slots[i].head; c; c = c->next)
            if (c->has_data && c->g->mark != stamp) {
                c->g->mark = stamp;
                n++;
            }
    return n;
}

/* Emits the groups of the window at slot index wi with revision 0 (its
 * first firing, or interim results): sorted, the first `limit` in key
 * order; unsorted, all of them in the order of the panes' cell lists.
 * Returns how many. */
size_t sql_view_emit_window(const sql_view *v, uint32_t wi, bool final, int64_t now,
                            size_t limit, bool sorted, sql_view_emit_fn emit, void *ctx)
{
    int64_t g = v->slots[wi].start;
    int ng = sql_view_gather(v, wi);
    if (ng < 0) {
        /* No memory to gather: group by group through the map, unordered. */
        size_t n = 0;
        int64_t end = g + v->cfg.size_ms;
        for (uint32_t i = wi; i < v->nslots && v->slots[i].start < end; i++)
            for (const cell *c = v->slots[i].head; c && (!sorted || n < limit); c = c->next) {
                if (!c->has_data)
                    continue;
                bool first = true, prior;
                for (int64_t q = g; q < c->start && first; q += v->cfg.advance_ms)
                    first = !data_find(v, q, c->g);
                if (!first)
                    continue;
                merger mg = {0};
                sql_view_merge_group(v, g, c->g, &mg, &prior);
                sql_view_emit_row(v, c->g, sql_view_merged_state(v, &mg), g, end, 0, final, now,
                                  emit, ctx);
                n++;
            }
        return n;
    }
    if (sorted) {
        sql_view_select_first(v, v->sort, (size_t)ng, limit, sql_view_cmp_group_key);
        if ((size_t)ng > limit)
            ng = (int)limit;
    }
    for (int i = 0; i < ng; i++) {
        const group *grp = v->sort[i];
        merger mg = {0};
        for (uint32_t x = grp->ghead; x != UINT32_MAX; x = v->gnext[x])
            merge_cell(v, &mg, v->gcell[x]);
        sql_view_emit_row(v, grp, sql_view_merged_state(v, &mg), g, g + v->cfg.size_ms, 0, final,
                          now, emit, ctx);
    }
    return (size_t)ng;
}

/* Everything but the hot case: a group's first event in a pane, or an
 * event in a pane some of whose windows have fired. */
int sql_view_add_slow(sql_view *v, cell *c, int64_t p, int64_t first, uint64_t kh,
                      const sql_value *key, const sql_value *args, int64_t ts, uint64_t arrival,
                      sql_view_emit_fn emit, void *ctx)
{
    const int64_t s = v->cfg.advance_ms, size = v->cfg.size_ms;
    uint32_t np = 0, nf;
    while (np < v->k && purge_due(v, first + (int64_t)np * s + size))
        np++;
    for (nf = np; nf < v->k && fire_due(v, first + (int64_t)nf * s + size); nf++)
        ;
    group *grp = c ? c->g : sql_view_group_find(v, kh, key);
    if (!grp && v->cfg.max_keys && v->groups.used >= v->cfg.max_keys) {
        v->refusals++;
        return SQL_VIEW_REFUSED;
    }
    /* Slots for every live window holding the pane; cells for the pane
     * data and a record per fired window. */
    if (sql_view_slots_reserve(v, v->k - np) < 0 || sql_view_cells_reserve(v, 1 + (nf - np)) < 0)
        return -ENOMEM;
    if (!grp && !key_fits(v, key))
        return -EINVAL;
    if (!grp && !(grp = sql_view_group_new(v, kh, key, false)))
        return -ENOMEM;
    grp->refs++; /* held while its first cell is made */
    for (uint32_t j = np; j < v->k; j++)
        sql_view_slot_get(v, first + (int64_t)j * s);
    if (!c)
        c = sql_view_cell_new(v, sql_view_slot_get(v, p), grp);
    if (!c->has_data) {
        c->has_data = 1;
        c->born = (uint16_t)nf;
    }
    int rc = agg_add(v, cell_state(c), args, ts, arrival);
    /* Re-fire the fired windows, ascending. */
    for (uint32_t j = np; j < nf; j++) {
        int64_t g = first + (int64_t)j * s;
        cell *r = g == p ? c : sql_view_cell_find(v, g, grp);
        if (!r)
            r = sql_view_cell_new(v, sql_view_slot_get(v, g), grp);
        merger mg = {0};
        bool prior;
        sql_view_merge_group(v, g, grp, &mg, &prior);
        if (!r->rec) {
            /* A group that was in the window when it fired had revision 0
             * then; one new to the fired window fires at revision 0. */
            r->rec = 1;
            r->revision = prior ? 1 : 0;
        } else {
            r->revision++;
        }
        v->late_updates++;
        sql_view_emit_row(v, grp, sql_view_merged_state(v, &mg), g, g + size, r->revision, true,
                          ts, emit, ctx);
    }
    sql_view_group_unref(v, grp);
    v->applied++;
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

void sql_view_advance_windows(sql_view *v, int64_t old, sql_view_emit_fn emit, void *ctx)
{
    for (uint32_t i = 0; i < v->nslots; i++) {
        int64_t last = v->slots[i].start + v->cfg.size_ms - 1;
        if (old != CF_TIME_NONE && last <= old)
            continue; /* fired before */
        if (last > v->wm)
            break;
        if (emit)
            sql_view_emit_window(v, i, true, last, SIZE_MAX, true, emit, ctx);
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
